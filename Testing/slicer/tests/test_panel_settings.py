"""Panel settings and overlay helpers on real MRML: helpers act on the scene they are given (not slicer.mrmlScene),
the topology / uncertainty settings survive scene save and reload through the typed parameter node (FAKE wrapper
and widgets, real .ui and MRML storage), and the heatmap threshold / "show as segmentation" / colour legend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import qt
import slicer
import slicer.util

from toporeg_slicer_testing import MiniSlicer, blended_slice, blobs, oblique_affine, save_scene
from toporeg.io import Volume
from TopoRegLogic import nodes
from TopoRegLogic import topology_display as overlay
from TopoRegLogic import transform_nodes as tn
from TopoRegLogic.params import PANEL_DEFAULTS, UNCERTAINTY_TASKS, panel_settings_from_parameter_node
from TopoRegLogic.topology_logic import REFERENCES, TopologyLogic
from TopoRegLogic.uncertainty_logic import TASKS

SHAPE = (16, 16, 12)


def _display_pair(scene, affine=None):
    """A fixed volume and a fake topology result: heatmap + 0-1 display map (a ramp along i) with legend attributes."""
    affine = oblique_affine() if affine is None else affine
    fixed = nodes.new_volume_node(scene, Volume(blobs(SHAPE, seed=3), affine), "fixed")
    ramp = np.broadcast_to((np.arange(SHAPE[0]) / (SHAPE[0] - 1))[:, None, None], SHAPE).astype(np.float32)
    heatmap = nodes.new_volume_node(scene, Volume(ramp * 50.0, affine), "fixed topology heatmap")
    display = nodes.new_volume_node(scene, Volume(np.ascontiguousarray(ramp), affine), "fixed topology display")
    heatmap.SetNodeReferenceID(REFERENCES["display"], display.GetID())
    legend = {"0": 2.0, "0.25": 2.0 + math.expm1(0.25 * math.log1p(1000.0)), "1": 1002.0}
    overlay.set_legend(display, legend, "0-1 display map of the heatmap")
    overlay.style_map(scene, display, 0.0, 1.0, 0.25)
    overlay.show_overlay(scene, fixed, display, 0.5)
    return fixed, heatmap, display, ramp


# --- helpers walk the scene they are given ------------------------------------------------------------------------
def test_overlay_helpers_edit_the_given_scene_not_slicer_mrmlScene(tmp_path):
    first = MiniSlicer(tmp_path / "first")
    fixed, _heatmap, display, _ = _display_pair(first.scene)
    second = MiniSlicer(tmp_path / "second")                      # now slicer.mrmlScene is the second scene
    try:
        assert slicer.mrmlScene is second.scene
        mine = nodes.scene_nodes(first.scene, "vtkMRMLSliceCompositeNode")
        theirs = nodes.scene_nodes(second.scene, "vtkMRMLSliceCompositeNode")
        assert len(mine) == len(theirs) == 3 and not set(mine) & set(theirs)
        overlay.show_overlay(first.scene, fixed, display, 0.4)
        overlay.set_opacity(first.scene, 0.7)
        for composite in mine:
            assert composite.GetForegroundVolumeID() == display.GetID()
            assert composite.GetBackgroundVolumeID() == fixed.GetID()
            assert composite.GetForegroundOpacity() == pytest.approx(0.7)
        assert all(c.GetForegroundVolumeID() is None for c in theirs)
        colour = tn.jacobian_color_node(first.scene)                # found again in its own scene, not added twice
        assert tn.jacobian_color_node(first.scene) is colour and colour.GetScene() is first.scene
        assert not [n for n in nodes.scene_nodes(second.scene, "vtkMRMLProceduralColorNode")
                    if n.GetName() == colour.GetName()]
        from TopoRegLogic import neuralizer_context                 # the old import path still works
        assert neuralizer_context.scene_nodes is nodes.scene_nodes
    finally:
        second.close()
        first.close()


# --- threshold, show as segmentation, colour legend ------------------------------------------------------------
def test_threshold_slider_hides_the_overlay_below_it_in_the_blended_slice(mini_slicer):
    fixed, heatmap, display, _ = _display_pair(mini_slicer.scene)
    logic = TopologyLogic(mini_slicer.scene)
    slice_logic = mini_slicer.slice_logics[0]
    slice_node = slice_logic.GetSliceNode()
    slice_node.SetDimensions(64, 64, 1)
    slice_logic.FitSliceToAll()
    slice_node.JumpSliceByCentering(*(nodes.ijk_to_ras(fixed) @ np.array([8, 8, 6, 1.0]))[:3])
    plain = blended_slice(slice_logic, 0.0)
    changed = {}
    for threshold in (0.25, 0.75, 1.01):
        logic.set_threshold(threshold, heatmap)
        shown = display.GetDisplayNode()
        assert shown.GetApplyThreshold() and shown.GetLowerThreshold() == pytest.approx(threshold)
        changed[threshold] = int((np.abs(blended_slice(slice_logic, 0.6) - plain)[:, :3].sum(1) > 3).sum())
    assert changed[0.25] > changed[0.75] > 0 and changed[1.01] == 0
    logic.set_threshold(0.5, None)                                  # no run yet and nothing selected: no error


def test_show_as_segmentation_takes_the_voxels_at_or_above_the_threshold(mini_slicer):
    scene = mini_slicer.scene
    fixed, heatmap, display, ramp = _display_pair(scene)
    logic = TopologyLogic(scene)
    segmentation, status = logic.show_as_segmentation(0.25, heatmap)
    assert segmentation.IsA("vtkMRMLSegmentationNode") and heatmap.GetNodeReference(REFERENCES["segmentation"]) \
        is segmentation
    segment = segmentation.GetSegmentation().GetSegment("topoReg_threshold")
    nats = overlay.display_to_value({"0": 2.0, "1": 1e3}, 0.25)      # from the attributes "2 nats", "1e+03 nats"
    assert segment.GetName() == f"Topological change (>= {nats:.3g} nats per voxel)" and f"{nats:.3g}" == "6.62"
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "topoReg_threshold", fixed)
    np.testing.assert_array_equal(mask.transpose(2, 1, 0) > 0, ramp >= 0.25)       # [k, j, i] -> [i, j, k]
    assert status.endswith(f"{int((ramp >= 0.25).sum())} voxels in '{segmentation.GetName()}'")
    again, _ = logic.show_as_segmentation(0.75, heatmap)                              # updates the same segment
    assert again is segmentation and segmentation.GetSegmentation().GetNumberOfSegments() == 1
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "topoReg_threshold", fixed)
    np.testing.assert_array_equal(mask.transpose(2, 1, 0) > 0, ramp >= 0.75)
    with pytest.raises(ValueError, match="reaches the threshold"):
        logic.show_as_segmentation(1.01, heatmap)
    with pytest.raises(ValueError, match="compute a heatmap first"):
        TopologyLogic(scene).show_as_segmentation(0.5)


def test_display_to_value_inverts_the_librarys_display_map():
    from toporeg.topology.pipeline import display_map

    heatmap = np.random.default_rng(0).gamma(1.0, 30.0, size=(12, 12, 12))
    display, legend = display_map(heatmap, np.ones(heatmap.shape, bool))
    for key, nats in legend.items():
        assert overlay.display_to_value(legend, float(key)) == pytest.approx(nats, rel=1e-9)
    assert overlay.display_to_value({}, 0.5) is None


def test_colour_legend_has_the_units_and_is_reused(mini_slicer):
    _fixed, _heatmap, display, _ = _display_pair(mini_slicer.scene)
    legend = overlay.add_color_legend(display, "Uncertainty (entropy), bits per voxel")
    assert legend.IsA("vtkMRMLColorLegendDisplayNode") and legend.GetVisibility()
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(display) is legend
    assert legend.GetTitleText() == "Uncertainty (entropy), bits per voxel"
    assert overlay.add_color_legend(display, "again") is legend and legend.GetTitleText() == "again"


# --- the panels' settings in the parameter node -------------------------------------------------------------------
def _widget():
    import TopoReg

    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    widget = TopoReg.TopoRegWidget(parent)
    widget.setup()
    qt.QTimer.active.clear()
    return widget


def test_topology_and_uncertainty_settings_survive_scene_save_and_reload(mini_slicer, tmp_path):
    assert set(UNCERTAINTY_TASKS) == set(TASKS)
    scene = mini_slicer.scene
    fixed, heatmap, _display, _ = _display_pair(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tissue seg")
    widget = _widget()
    ui, raw = widget.ui, widget._parameterNode.parameterNode
    assert panel_settings_from_parameter_node(raw) == PANEL_DEFAULTS                 # defaults written at setup
    assert (ui.heatmapOpacitySlider.value, ui.heatmapThresholdSlider.value, ui.uncertaintySamplesSpinBox.value) == \
        (50, 25, 16)
    ui.topologyMethodComboBox.setCurrentText("learned")
    ui.topologyFeaturesComboBox.setCurrentText("semantic")
    ui.heatmapVolumeSelector.setCurrentNode(heatmap)
    ui.heatmapOpacitySlider.value = 30
    ui.heatmapThresholdSlider.value = 40
    ui.uncertaintyInputSelector.setCurrentNode(fixed)
    ui.uncertaintyTaskComboBox.setCurrentText("brain")
    ui.uncertaintySamplesSpinBox.value = 4
    ui.probabilityVolumesCheckBox.checked = True
    ui.uncertaintySegmentationSelector.setCurrentNode(segmentation)
    assert _display.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.4)      # the slider reached the overlay
    assert raw.GetParameter("heatmapThreshold") == "40" and raw.GetParameter("uncertaintyTask") == "brain"
    widget.cleanup()
    save_scene(mini_slicer, tmp_path / "saved")

    reloaded = MiniSlicer(tmp_path / "second")                     # a new application, as after restarting Slicer
    reloaded.scene.SetURL(str(tmp_path / "saved" / "scene.mrml"))
    assert reloaded.scene.Connect()
    widget = _widget()
    try:
        ui = widget.ui
        assert (ui.topologyMethodComboBox.currentText, ui.topologyFeaturesComboBox.currentText) == ("learned", "semantic")
        assert ui.heatmapVolumeSelector.currentNode().GetName() == "fixed topology heatmap"
        assert (ui.heatmapOpacitySlider.value, ui.heatmapThresholdSlider.value) == (30, 40)
        assert ui.uncertaintyInputSelector.currentNode().GetName() == "fixed"
        assert (ui.uncertaintyTaskComboBox.currentText, ui.uncertaintySamplesSpinBox.value) == ("brain", 4)
        assert ui.probabilityVolumesCheckBox.checked
        assert ui.uncertaintySegmentationSelector.currentNode().GetName() == "tissue seg"
        topology, uncertainty = widget.topologyPanel.parameters(), widget.uncertaintyPanel.parameters()
        assert (topology.method, topology.features, topology.opacity, topology.threshold) == \
            ("learned", "semantic", 0.3, 0.4)
        assert topology.heatmapVolume is ui.heatmapVolumeSelector.currentNode()
        assert (uncertainty.task, uncertainty.samples, uncertainty.probabilityVolumes) == ("brain", 4, True)
        plain = panel_settings_from_parameter_node(widget._parameterNode.parameterNode)  # without the wrapper too
        assert plain["heatmapThreshold"] == 40 and plain["uncertaintySamples"] == 4 and plain["probabilityVolumes"]
        ui.heatmapSegmentationButton.click()                       # "show as segmentation" on the reloaded heatmap
        assert ui.topologyStatusLabel.text.startswith("Topological change (>= "), ui.topologyStatusLabel.text
    finally:
        widget.cleanup()
        reloaded.close()
