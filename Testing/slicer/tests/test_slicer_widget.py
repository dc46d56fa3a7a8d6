"""The module widget built from the real .ui file with FAKE qt/ctk/qMRML widgets and a FAKE parameterNodeWrapper,
over real MRML; Apply runs the real `toporeg` CLI in a child process (SlicerNNUnet-style widget test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qt
import SimpleITK as sitk
import slicer
import slicer.util

from toporeg_slicer_testing import blobs, correlation, oblique_affine, wait_for_background_run
from toporeg.io import Volume
from TopoRegLogic import nodes
from TopoRegLogic import transform_nodes as tn

TIMEOUT = 300


@pytest.fixture
def widget(mini_slicer):
    import TopoReg

    scene, affine = mini_slicer.scene, oblique_affine()
    image = blobs((16, 16, 14), seed=7)
    fixed = nodes.new_volume_node(scene, Volume(image, affine), "fixed")
    moving = nodes.new_volume_node(scene, Volume(np.roll(image, 1, axis=0), affine), "moving")
    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    module_widget = TopoReg.TopoRegWidget(parent)     # as Slicer does: construct with a parent, then setup()
    module_widget.setup()
    qt.QTimer.active.clear()
    yield module_widget, fixed, moving
    module_widget.cleanup()
    qt.QTimer.active.clear()


def test_setup_binds_the_parameter_node_and_selects_inputs(widget):
    w, fixed, moving = widget
    ui, params = w.ui, w._parameterNode
    assert ui.fixedVolumeSelector.currentNode() is fixed and ui.movingVolumeSelector.currentNode() is moving
    assert params.fixedVolume is fixed and params.movingVolume is moving
    assert ui.fixedVolumeSelector.mrmlScene() is slicer.mrmlScene          # .ui connections carried the scene
    assert [ui.methodComboBox.model().item(i).isEnabled() for i in range(4)] == [True] * 4  # every method ships
    assert ui.applyButton.enabled and not ui.cancelButton.enabled
    ui.presetComboBox.currentIndex = ui.presetComboBox.findText("fast")      # GUI -> parameter node
    assert params.preset == "fast" and params.parameterNode.GetParameter("preset") == "fast"
    params.similarity = "nmi"                                                 # parameter node -> GUI
    assert ui.similarityComboBox.currentText == "nmi"
    ui.showJacobianCheckBox.checked = False
    assert params.parameterNode.GetParameter("showJacobian") == "False"


def test_ui_node_types_agree_with_the_parameter_annotations(widget):
    """Slicer's connector replaces a selector's nodeTypes with the annotation's: the .ui must not promise others."""
    import xml.etree.ElementTree as ET

    from toporeg_slicer_testing import MODULE_DIR

    w, _, _ = widget
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "TopoReg.ui").getroot()
    for element in root.iter("widget"):
        if element.get("class") == "qMRMLNodeComboBox":
            declared = [s.text for s in element.find("property[@name='nodeTypes']/stringlist")]
            assert getattr(w.ui, element.get("name")).nodeTypes == declared, element.get("name")


def test_mask_union_is_stored_like_slicers_union_serializer(widget, mini_slicer):
    w, fixed, _ = widget
    params, raw = w._parameterNode, w._parameterNode.parameterNode
    assert raw.GetParameter("fixedMask_2") == "True" and params.fixedMask is None
    segmentation = mini_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    w.ui.fixedMaskSelector.setCurrentNode(segmentation)
    assert params.fixedMask is segmentation and raw.GetNodeReference("fixedMask_1") is segmentation
    assert not raw.GetParameter("fixedMask_2")
    from TopoRegLogic.params import params_from_parameter_node

    assert params_from_parameter_node(raw).fixedMask is segmentation


def test_apply_is_disabled_with_the_reason_when_inputs_are_incomplete(widget):
    w, fixed, _ = widget
    w.ui.movingVolumeSelector.setCurrentNode(fixed)
    assert not w.ui.applyButton.enabled and "must be different" in w.ui.applyButton.toolTip
    w.ui.movingVolumeSelector.setCurrentNode(None)
    assert not w.ui.applyButton.enabled and "select a fixed and a moving volume" in w.ui.applyButton.toolTip


def test_apply_runs_the_cli_in_the_background_and_shows_the_result(widget):
    w, fixed, moving = widget
    ui = w.ui
    ui.presetComboBox.currentIndex = ui.presetComboBox.findText("fast")
    ui.deviceComboBox.currentIndex = ui.deviceComboBox.findText("cpu")
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    ui.outputVolumeSelector.setCurrentNode(output)
    w.logic.registration.keep_temp = True                    # to read the CLI's files independently below
    ui.applyButton.click()
    assert ui.statusLabel.text == "Running..." and ui.cancelButton.enabled and not ui.applyButton.enabled
    assert ui.progressBar.visible and qt.QTimer.active
    values = wait_for_background_run(TIMEOUT, lambda: ui.progressBar.value)
    assert ui.statusLabel.text.startswith("Done in "), ui.statusLabel.text
    assert "folding" in ui.statusLabel.text and ui.progressBar.value == 100
    assert values == sorted(values) and len(set(values)) > 2                 # progress moved forward
    assert ui.applyButton.enabled and not ui.cancelButton.enabled
    transform = w._parameterNode.outputTransform
    assert transform is not None and transform.IsA("vtkMRMLGridTransformNode")
    assert ui.outputTransformSelector.currentNode() is transform             # written back, shown in the GUI
    assert moving.GetParentTransformNode() is transform
    np.testing.assert_array_equal(nodes.ijk_to_ras(output), nodes.ijk_to_ras(fixed))
    assert output.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
    # the CLI's displacement.nii.gz read by SimpleITK (LPS vectors, [k, j, i] array) is the grid transform's field
    (work,) = Path(slicer.app.temporaryPath).glob("TopoReg-*")
    itk_field = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "out" / "displacement.nii.gz")))
    np.testing.assert_allclose(slicer.util.arrayFromGridTransform(transform), itk_field * [-1, -1, 1], atol=1e-5)
    # and Slicer resamples the moving volume through it onto the library's warped image
    resampled = nodes.volume_from_node(tn.resample_on_fixed(moving, fixed)).data
    warped = nodes.volume_from_node(output).data
    inside = np.zeros(warped.shape, bool)
    inside[2:-2, 2:-2, 2:-2] = True
    assert correlation(resampled[inside], warped[inside]) > 0.999


def test_apply_with_bad_input_shows_one_line_error(widget, monkeypatch):
    w, fixed, _ = widget
    monkeypatch.setattr(w.logic, "inputProblem", lambda params: "")   # let the click through to the logic
    w._parameterNode.movingVolume = fixed
    w.ui.applyButton.enabled = True
    w.ui.applyButton.click()
    assert w.ui.statusLabel.text == "Error: fixed and moving volumes must be different"
    assert not qt.QTimer.active and w._runner is None


def test_cancel_button_asks_the_logic_to_cancel(widget, monkeypatch):
    w, _, _ = widget
    calls = []
    monkeypatch.setattr(w.logic, "cancel", lambda: calls.append(1))
    w.ui.cancelButton.enabled = True
    w.ui.cancelButton.click()
    assert calls == [1] and w.ui.statusLabel.text == "Cancelling..."


def test_closing_the_scene_stops_a_running_registration(widget):
    w, _, moving = widget
    w.ui.applyButton.click()
    runner = w._runner
    assert runner.running
    slicer.mrmlScene.Clear()                                   # StartCloseEvent: the child process is killed
    assert runner.state == "cancelled" and not runner.running
    assert w.ui.statusLabel.text == "Cancelled; no outputs were written."
    assert not list(Path(slicer.app.temporaryPath).glob("TopoReg-*"))
    assert not slicer.util.getNodesByClass("vtkMRMLGridTransformNode")


def _run_to_end(w):
    wait_for_background_run(TIMEOUT)
    return w.ui.statusLabel.text


def test_warp_along_selector_places_moving_segmentations_and_markups_under_the_result(widget, mini_slicer):
    w, fixed, moving = widget
    ui, params, raw = w.ui, w._parameterNode, w._parameterNode.parameterNode
    scene = mini_slicer.scene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moving structures")
    segmentation.GetSegmentation().AddEmptySegment("tumour")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "moving points")
    centre = nodes.ijk_to_ras(moving) @ np.array([8.0, 8.0, 7.0, 1.0])
    points.AddControlPoint(*centre[:3])
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "not checked")
    assert ui.warpAlongSelector.mrmlScene() is scene and params.warpAlong == []
    ui.warpAlongSelector.setCheckState(segmentation, qt.Qt.Checked)           # GUI -> parameter node
    ui.warpAlongSelector.setCheckState(points, qt.Qt.Checked)
    assert params.warpAlong == [segmentation, points]
    assert raw.GetParameter("warpAlong.len") == "2" and raw.GetNodeReference("warpAlong.1") is points  # as Slicer
    params.warpAlong = [points]                                               # parameter node -> GUI
    assert ui.warpAlongSelector.checkedNodes() == [points]
    ui.warpAlongSelector.setCheckState(segmentation, qt.Qt.Checked)
    ui.presetComboBox.currentIndex = ui.presetComboBox.findText("fast")
    ui.deviceComboBox.currentIndex = ui.deviceComboBox.findText("cpu")
    ui.applyButton.click()
    assert _run_to_end(w).startswith("Done in "), ui.statusLabel.text
    transform = params.outputTransform
    assert transform is not None and transform.IsA("vtkMRMLGridTransformNode")
    for node in (segmentation, points):                                       # warped along, still in the scene
        assert scene.IsNodePresent(node) and node.GetParentTransformNode() is transform, node.GetName()
    assert other.GetParentTransformNode() is None
    # the points are drawn through the inverse (moving -> fixed): mapping them back with the resampling
    # direction (fixed -> moving, FromParent) lands on the placed moving-space position
    world = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(0, world)
    np.testing.assert_allclose(tn.map_points(np.array(world), transform)[0], centre[:3], atol=0.05)
    assert np.linalg.norm(np.array(world) - centre[:3]) > 0.5                 # and they did move (about 1.5 mm)
    from TopoRegLogic.params import params_from_parameter_node, write_parameter_node

    saved = params_from_parameter_node(raw)                                  # batch scripts read and write it too
    assert set(saved.warpAlong) == {segmentation, points}
    copy = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    write_parameter_node(copy, saved)
    assert params_from_parameter_node(copy).warpAlong == saved.warpAlong and copy.GetParameter("warpAlong.len") == "2"
