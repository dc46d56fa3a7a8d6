"""The topology heatmap panel: `TopologyLogic` runs the real `toporeg topology` CLI in a child process on tiny
synthetic volumes (oblique geometry) in a real MRML scene, then the widget (FAKE qt/ctk/qMRML widgets, real .ui)
drives it. Also: the registration panel's topology-aware flag."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import qt
import SimpleITK as sitk
import slicer
import slicer.util

from toporeg_slicer_testing import (MODULE_DIR, MiniSlicer, assert_overlay_on_every_slice_view, blended_slice, blobs,
                                    oblique_affine, record_progress, wait_for_background_run)
from toporeg.errors import InputError
from toporeg.io import Volume
from TopoRegLogic import nodes
from TopoRegLogic import topology_display as overlay
from TopoRegLogic.params import RegistrationParams
from TopoRegLogic.registration_logic import RegistrationLogic
from TopoRegLogic.topology_logic import REFERENCES, TopologyLogic, TopologyParameters

SHAPE = (16, 16, 14)
TIMEOUT = 300


def _images(seed=7):
    """moving = smooth blobs; fixed = the same, shifted one voxel, with a new bright 'lesion' (a topological change)."""
    image = blobs(SHAPE, seed=seed)
    fixed = np.roll(image, 1, axis=0).copy()
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    fixed[sum((g - c) ** 2 for g, c in zip(grid, (8, 7, 7))) <= 6] = 1.5
    return fixed, image


def _add_volumes(scene, affine=None):
    """fixed, moving and two controls (the outlier score needs at least two)."""
    affine = oblique_affine() if affine is None else affine
    fixed, moving = _images()
    controls = [np.roll(blobs(SHAPE, seed=7), shift, axis=1).copy() for shift in (-1, 1)]
    return (nodes.new_volume_node(scene, Volume(fixed, affine), "fixed"),
            nodes.new_volume_node(scene, Volume(moving, affine), "moving"),
            *(nodes.new_volume_node(scene, Volume(c, affine), f"control {i}") for i, c in enumerate(controls)))


def _wait(runner, timeout=TIMEOUT):
    return runner.wait(timeout=timeout, interval=0.05)


# --- one real run, many checks ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    temp = tmp_path_factory.mktemp("topology")
    mini = MiniSlicer(temp)
    scene = mini.scene
    fixed, moving, *controls = _add_volumes(scene)
    logic = TopologyLogic(scene, volumes_logic=mini.volumes_logic, temp_root=temp / "work", keep_temp=True)
    params = TopologyParameters(fixedVolume=fixed, movingVolume=moving, controls=tuple(controls), preset="fast",
                                iterations=5, device="cpu", opacity=0.5)
    events, done = [], []
    start = time.perf_counter()
    runner = logic.start_background(params, events.append, lambda ok, status: done.append((ok, status)))
    state = _wait(runner)
    seconds = time.perf_counter() - start
    assert state == "succeeded", runner.full_log()
    out = runner.work_dir / "out"
    yield SimpleNamespace(mini=mini, scene=scene, fixed=fixed, moving=moving, controls=controls, logic=logic,
                          params=params, runner=runner, events=events, done=done, out=out, seconds=seconds,
                          last=dict(logic.last), report=json.loads((out / "report.json").read_text(encoding="utf-8")))
    mini.close()


def test_run_finishes_quickly_with_one_status_line_and_progress(run):
    assert run.seconds < 60, run.seconds                       # about 10 s on a loaded 2-core machine
    assert run.done == [(True, run.last["status"])]
    status = run.last["status"]
    assert status.startswith("Heatmap done in ") and "nats per voxel" in status, status
    assert "outlier score against 2 controls" in status and "registration folding" in status
    fractions = [e.fraction for e in run.events]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0.9
    assert len({e.stage for e in run.events}) >= 2


def test_heatmap_node_lives_exactly_on_the_fixed_grid(run):
    heatmap = run.last["heatmap"]
    assert heatmap.IsA("vtkMRMLScalarVolumeNode") and heatmap.GetName() == "fixed topology heatmap"
    for node in (heatmap, run.last["display"], run.last["outlier"], run.last["warped"]):
        np.testing.assert_array_equal(nodes.ijk_to_ras(node), nodes.ijk_to_ras(run.fixed))
        assert node.GetImageData().GetDimensions() == run.fixed.GetImageData().GetDimensions()


def test_heatmap_voxels_equal_the_cli_files_read_with_nibabel(run):
    for role, name in (("heatmap", "heatmap.nii.gz"), ("display", "heatmap_display.nii.gz"),
                       ("outlier", "outlier.nii.gz")):
        image = nib.load(str(run.out / name))                # nibabel: [i, j, k]; Slicer's array: [k, j, i]
        np.testing.assert_allclose(image.affine, nodes.ijk_to_ras(run.fixed), atol=1e-4)
        from_file = np.asarray(image.dataobj, dtype=np.float32)
        in_slicer = slicer.util.arrayFromVolume(run.last[role]).transpose(2, 1, 0)
        np.testing.assert_array_equal(in_slicer, from_file)
    display = slicer.util.arrayFromVolume(run.last["display"])
    assert 0.0 <= display.min() and display.max() <= 1.0 and display.max() > 0.5     # something stands out
    heat = nodes.volume_from_node(run.last["heatmap"]).data
    assert np.unravel_index(np.argmax(heat), SHAPE) != (0, 0, 0) and heat.std() > 0


def test_display_map_is_the_foreground_of_every_slice_view(run):
    display = run.last["display"]
    composites = assert_overlay_on_every_slice_view(run.scene, run.fixed, display, opacity=0.5, window=(0.0, 1.0),
                                                    threshold=0.25, color_name=overlay.COLOR_NAME)
    # slicer-core has no "Inferno" table: the panel builds a procedural one
    assert display.GetDisplayNode().GetColorNode().IsA("vtkMRMLProceduralColorNode")
    run.logic.set_opacity(0.8)                                            # the opacity slider
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in composites)
    run.logic.set_opacity(0.5)


def test_legend_is_stored_as_node_attributes(run):
    legend = run.report["metrics"]["display_legend"]
    assert sorted(legend, key=float) == ["0", "0.25", "0.5", "0.75", "1"]
    for role in ("heatmap", "display"):
        node = run.last[role]
        for key, value in legend.items():
            assert node.GetAttribute(f"TopoReg.legend.{key}") == f"{value:.3g} nats"
        assert overlay.legend_from_node(node) == {k: f"{v:.3g} nats" for k, v in legend.items()}
    assert run.last["heatmap"].GetAttribute("TopoReg.Units") == "nats per voxel (L_sym)"
    assert overlay.legend_text(run.last["legend"]).startswith("Colour 0 / 0.25 / 0.5 / 0.75 / 1 = ")
    assert not overlay.legend_from_node(run.last["outlier"])               # Q has its own scale
    title = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(run.last["display"]).GetTitleText()  # in the views
    assert title == f"Topological change, log scale: 0 = {legend['0']:.3g}, 1 = {legend['1']:.3g} nats/voxel"


def test_outlier_map_and_references(run):
    heatmap = run.last["heatmap"]
    for role in ("display", "outlier", "transform", "warped"):
        assert heatmap.GetNodeReference(REFERENCES[role]) is run.last[role], role
    assert run.last["outlier"].GetName() == "fixed outlier score"
    assert len(run.report["controls"]) == 2


def test_initial_registration_becomes_a_transform_and_a_warped_volume(run):
    transform = run.last["transform"]
    assert transform.IsA("vtkMRMLGridTransformNode") and transform.GetName() == "moving to fixed (TopoReg topology)"
    cls = slicer.vtkMRMLTransformNode
    assert transform.GetNodeReference(cls.GetFixedNodeReferenceRole()) is run.fixed
    assert transform.GetNodeReference(cls.GetMovingNodeReferenceRole()) is run.moving
    assert run.moving.GetParentTransformNode() is None                   # the panel does not move inputs
    itk_field = sitk.GetArrayFromImage(sitk.ReadImage(str(run.out / "registration" / "displacement.nii.gz")))
    np.testing.assert_allclose(slicer.util.arrayFromGridTransform(transform), itk_field * [-1, -1, 1], atol=1e-5)
    warped = nib.load(str(run.out / "registration" / "warped.nii.gz"))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(run.last["warped"]).transpose(2, 1, 0),
                               np.asarray(warped.dataobj, np.float32), atol=1e-6)


def test_blended_slice_shows_the_heatmap_only_above_the_threshold(run):
    """The slice logic's own blending (no OpenGL): the overlay changes pixels; fully thresholded it changes none."""
    slice_logic = run.mini.slice_logics[0]
    slice_node = slice_logic.GetSliceNode()
    slice_node.SetDimensions(64, 64, 1)
    slice_logic.FitSliceToAll()
    ras = nodes.ijk_to_ras(run.fixed) @ np.array([8, 7, 7, 1.0])           # through the lesion
    slice_node.JumpSliceByCentering(*ras[:3])

    def blended(opacity, threshold=0.1):
        run.last["display"].GetDisplayNode().SetLowerThreshold(threshold)
        return blended_slice(slice_logic, opacity)

    try:
        plain, shown = blended(0.0), blended(0.5)
        changed = np.abs(shown - plain)[:, :3].sum(1) > 3
        assert changed.any(), "the heatmap should be visible on the slice through the lesion"
        warm = shown[changed]
        assert (warm[:, 0] >= warm[:, 2]).mean() > 0.5                      # inferno: red/orange/yellow on top
        assert not (np.abs(blended(0.5, threshold=1.01) - plain)[:, :3].sum(1) > 3).any()
    finally:
        run.last["display"].GetDisplayNode().SetLowerThreshold(0.1)
        slice_logic.GetSliceCompositeNode().SetForegroundOpacity(0.5)


def test_report_messages_end_the_status_line(run):
    """The CLI's input-domain warnings (report.json `messages`) reach the panel's status line, as in the other panels."""
    assert run.report["messages"] == []                          # written by the CLI; none for this same-kind pair
    assert "skull" not in run.last["status"]
    original = (run.out / "report.json").read_text(encoding="utf-8")
    warning = ("the fixed image looks like a whole head (3.9 L of foreground) but the moving image like a "
               "skull-stripped brain (1.9 L): skull and scalp will show as topological change")
    try:
        (run.out / "report.json").write_text(json.dumps({**run.report, "messages": [warning, "second"]}),
                                             encoding="utf-8")
        params = TopologyParameters(**{**vars(run.params), "heatmapVolume": run.last["heatmap"]})
        status = run.logic.apply_results(params, run.out)
        assert status.startswith("Heatmap done in ") and status.endswith(f"; {warning}; second"), status
        assert run.logic.last["status"] == status
    finally:
        (run.out / "report.json").write_text(original, encoding="utf-8")
        run.logic.last.update(run.last)


def test_applying_again_updates_the_same_nodes(run):
    before = run.scene.GetNumberOfNodes()
    params = TopologyParameters(**{**vars(run.params), "heatmapVolume": run.last["heatmap"]})
    status = run.logic.apply_results(params, run.out)
    assert run.scene.GetNumberOfNodes() == before and status.startswith("Heatmap done in ")
    for role in ("heatmap", "display", "outlier", "transform", "warped"):
        assert run.logic.last[role] is run.last[role], role
    params.controls = ()                                         # a run without controls drops the stale Q map
    report = json.loads((run.out / "report.json").read_text(encoding="utf-8"))
    report["files"].pop("outlier")
    (run.out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    run.logic.apply_results(params, run.out)
    assert run.last["heatmap"].GetNodeReference(REFERENCES["outlier"]) is None
    assert not run.scene.IsNodePresent(run.last["outlier"])             # the volume (and its display node)
    assert run.scene.GetNumberOfNodes() == before - 2


# --- arguments, errors, cancel ---------------------------------------------------------------------------
def test_cli_arguments_are_built_from_the_parameters(mini_slicer, tmp_path):
    logic = TopologyLogic(mini_slicer.scene)
    out = tmp_path / "out"
    plain = TopologyParameters()
    assert logic.cli_arguments(plain, ["f.nii", "m.nii"], out) == [
        "topology", "f.nii", "m.nii", "--out", str(out), "--method", "optimize", "--features", "intensity",
        "--preset", "default", "--device", "auto"]
    full = TopologyParameters(method="learned", features="semantic", model=" topo_3d ", preset="fast", iterations=5,
                              device="cpu")
    inputs = ["f.nii", "m.nii", "--fixed-mask", "fm.nii", "--controls", "c0.nii", "c1.nii"]
    assert logic.cli_arguments(full, inputs, out) == [
        "topology", "f.nii", "m.nii", "--out", str(out), "--method", "learned", "--features", "semantic",
        "--preset", "fast", "--device", "cpu", "--model", "topo_3d", "--iterations", "5",
        "--fixed-mask", "fm.nii", "--controls", "c0.nii", "c1.nii"]
    # the model only matters to the learned method (the CLI would try to resolve it otherwise)
    assert "--model" not in logic.cli_arguments(TopologyParameters(model="x"), ["f", "m"], out)


def test_inputs_are_written_with_masks_and_controls(mini_slicer, tmp_path):
    scene = mini_slicer.scene
    fixed, moving, control, other = _add_volumes(scene)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:12, 3:12, 2:11] = 1
    mask = nodes.new_volume_node(scene, Volume(labels, oblique_affine(), is_label=True), "mask")
    logic = TopologyLogic(scene)
    params = TopologyParameters(fixedVolume=fixed, movingVolume=moving, fixedMask=mask, controls=(control, other))
    args = logic.write_inputs(params, tmp_path)
    assert args == [str(tmp_path / "fixed.nii"), str(tmp_path / "moving.nii"), "--fixed-mask",
                    str(tmp_path / "fixed_mask.nii"), "--controls", str(tmp_path / "control_0.nii"),
                    str(tmp_path / "control_1.nii")]
    written = nib.load(str(tmp_path / "control_0.nii"))
    np.testing.assert_allclose(written.affine, nodes.ijk_to_ras(control), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), nodes.volume_from_node(control).data)
    assert logic.registration.input_names[str(tmp_path / "control_1.nii")] == "control 'control 1'"


def _flat(scene, name):
    image = blobs((16, 16, 1), seed=3)
    return nodes.new_volume_node(scene, Volume(image, np.eye(4)), name)


@pytest.mark.parametrize("case, message", [
    ("no fixed", "select a fixed and a moving volume"),
    ("2D vs 3D", "moving volume 'moving' is 3D but fixed volume 'flat' is 2D"),
    ("2D control", "control volume 'flat' is 2D but fixed volume 'fixed' is 3D"),
    ("learned without model", "method 'learned' needs a trained topology model"),
    ("fixed as control", "the fixed volume cannot be one of its own controls"),
    ("one control", "a control set needs at least two volumes"),
    ("same", "fixed and moving volumes must be different"),
])
def test_bad_input_gives_a_clear_error_before_anything_starts(mini_slicer, tmp_path, case, message):
    scene = mini_slicer.scene
    fixed, moving, control, _ = _add_volumes(scene)
    flat = _flat(scene, "flat")
    params = {"no fixed": TopologyParameters(movingVolume=moving),
              "2D vs 3D": TopologyParameters(fixedVolume=flat, movingVolume=moving),
              "2D control": TopologyParameters(fixedVolume=fixed, movingVolume=moving, controls=(control, flat)),
              "one control": TopologyParameters(fixedVolume=fixed, movingVolume=moving, controls=(control,)),
              "learned without model": TopologyParameters(fixedVolume=fixed, movingVolume=moving, method="learned"),
              "fixed as control": TopologyParameters(fixedVolume=fixed, movingVolume=moving, controls=(control, fixed)),
              "same": TopologyParameters(fixedVolume=fixed, movingVolume=fixed)}[case]
    logic = TopologyLogic(scene, temp_root=tmp_path / "work")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message) as error:
        logic.start_background(params)
    assert "\n" not in str(error.value)
    assert logic.runner is None and scene.GetNumberOfNodes() == before
    assert not list((tmp_path / "work").glob("*")) if (tmp_path / "work").exists() else True


def test_a_failing_cli_run_reports_one_line_and_keeps_the_log(mini_slicer, tmp_path):
    scene = mini_slicer.scene
    fixed, moving, *_ = _add_volumes(scene)
    logic = TopologyLogic(scene, temp_root=tmp_path / "work")
    before, done = scene.GetNumberOfNodes(), []
    params = TopologyParameters(fixedVolume=fixed, movingVolume=moving, method="learned", model="no_such_model",
                                device="cpu")
    assert _wait(logic.start_background(params, on_done=lambda ok, s: done.append((ok, s)))) == "failed"
    assert done == [(False, logic.last["status"])]
    assert logic.last["status"].startswith("Failed: unknown model 'no_such_model'"), logic.last["status"]
    assert "toporeg.cli.main topology" in logic.last["log"]
    assert scene.GetNumberOfNodes() == before and not list((tmp_path / "work").glob("*"))


def test_a_cancelled_run_adds_no_nodes_and_leaves_no_files(mini_slicer, tmp_path):
    scene = mini_slicer.scene
    fixed, moving, *_ = _add_volumes(scene)
    logic = TopologyLogic(scene, temp_root=tmp_path / "work")
    before, done = scene.GetNumberOfNodes(), []
    runner = logic.start_background(TopologyParameters(fixedVolume=fixed, movingVolume=moving, device="cpu"),
                                    on_done=lambda ok, s: done.append((ok, s)))
    logic.cancel()                                         # the cancel file exists before the CLI starts working
    assert _wait(runner) == "cancelled"
    assert done == [(False, "Cancelled; no outputs were written.")]
    assert scene.GetNumberOfNodes() == before
    assert not slicer.util.getNodesByClass("vtkMRMLGridTransformNode", scene)
    assert not list((tmp_path / "work").glob("*"))


def test_registration_passes_the_topology_aware_flag(mini_slicer):
    logic = RegistrationLogic(mini_slicer.scene)
    args = logic.cli_arguments(RegistrationParams(topologyAware=True), ["f.nii", "m.nii"], Path("out"))
    assert args[-1] == "--topology-aware" and args[:3] == ["register", "f.nii", "m.nii"]
    assert "--topology-aware" not in logic.cli_arguments(RegistrationParams(), ["f.nii", "m.nii"], Path("out"))
    fixed, moving, *_ = _add_volumes(mini_slicer.scene)
    with pytest.raises(InputError, match="topology-aware registration runs through the toporeg CLI"):
        logic.run_in_process(RegistrationParams(fixedVolume=fixed, movingVolume=moving, topologyAware=True))


# --- the widget ------------------------------------------------------------------------------------------
@pytest.fixture
def widget(mini_slicer):
    import TopoReg

    fixed, moving, control, other = _add_volumes(mini_slicer.scene)
    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    module_widget = TopoReg.TopoRegWidget(parent)
    module_widget.setup()
    qt.QTimer.active.clear()
    yield SimpleNamespace(w=module_widget, ui=module_widget.ui, fixed=fixed, moving=moving, controls=(control, other))
    module_widget.cleanup()
    qt.QTimer.active.clear()


def test_topology_section_loads_enabled_with_its_widgets(widget):
    ui = widget.ui
    assert ui.topologyCollapsibleButton.enabled and ui.topologyCollapsibleButton.text == "Topology heatmap"
    assert [ui.topologyMethodComboBox.itemText(i) for i in range(ui.topologyMethodComboBox.count())] == \
        ["optimize", "learned"]
    assert ui.topologyFeaturesComboBox.currentText == "intensity" and ui.topologyModelComboBox.editable
    assert ui.computeHeatmapButton.enabled and not ui.topologyCancelButton.enabled
    assert ui.heatmapOpacitySlider.value == 50 and not ui.topologyProgressBar.visible
    assert ui.topologyControlsSelector.mrmlScene() is slicer.mrmlScene
    assert ui.heatmapVolumeSelector.mrmlScene() is slicer.mrmlScene          # via the .ui connection
    assert set(widget.controls) <= set(ui.topologyControlsSelector.nodes())
    ui.topologyAwareCheckBox.checked = True                                  # registration panel -> parameter node
    assert widget.w._parameterNode.topologyAware and \
        widget.w._parameterNode.parameterNode.GetParameter("topologyAware") == "True"


def test_compute_button_calls_the_logic_with_parameters_read_from_the_widgets(widget, monkeypatch):
    ui, calls = widget.ui, []
    fake_runner = SimpleNamespace(running=True, poll=lambda: True, kill=lambda: None, wait=lambda timeout=None: "")
    monkeypatch.setattr(widget.w.logic.topology, "start_background",
                        lambda params, on_progress, on_done: calls.append(params) or fake_runner)
    ui.topologyMethodComboBox.setCurrentText("learned")
    ui.topologyFeaturesComboBox.setCurrentText("semantic")
    ui.topologyModelComboBox.addItem(" my_topology_model ")
    ui.topologyModelComboBox.setCurrentText(" my_topology_model ")
    for control in widget.controls:
        ui.topologyControlsSelector.setCheckState(control, 2)
    ui.presetComboBox.setCurrentText("fast")
    ui.deviceComboBox.setCurrentText("cpu")
    ui.heatmapOpacitySlider.value = 70
    ui.computeHeatmapButton.click()
    assert calls == [TopologyParameters(
        fixedVolume=widget.fixed, movingVolume=widget.moving, method="learned", features="semantic",
        model="my_topology_model", controls=widget.controls, preset="fast", device="cpu", opacity=0.7)]
    assert ui.topologyStatusLabel.text == "Running..." and ui.topologyProgressBar.visible
    assert ui.topologyCancelButton.enabled and not ui.computeHeatmapButton.enabled and qt.QTimer.active
    cancels = []
    monkeypatch.setattr(widget.w.logic.topology, "cancel", lambda: cancels.append(1))
    ui.topologyCancelButton.click()
    assert cancels == [1] and ui.topologyStatusLabel.text == "Cancelling..."


def test_compute_with_bad_input_shows_one_line_error(widget):
    widget.ui.fixedVolumeSelector.setCurrentNode(None)
    widget.ui.computeHeatmapButton.click()
    assert widget.ui.topologyStatusLabel.text == "Error: select a fixed and a moving volume"
    assert widget.w._topologyRunner is None and not qt.QTimer.active


def test_compute_button_runs_the_cli_and_shows_the_heatmap(widget):
    ui = widget.ui
    ui.presetComboBox.setCurrentText("fast")
    ui.deviceComboBox.setCurrentText("cpu")
    fractions = record_progress(widget.w.topologyPanel)
    ui.computeHeatmapButton.click()
    assert ui.topologyStatusLabel.text == "Running..." and ui.topologyCancelButton.enabled
    values = wait_for_background_run(TIMEOUT, lambda: ui.topologyProgressBar.value)
    assert ui.topologyStatusLabel.text.startswith("Heatmap done in "), ui.topologyStatusLabel.text + \
        ui.topologyLogTextEdit.toPlainText()
    assert ui.topologyProgressBar.value == 100 and values and len(set(fractions)) > 2
    assert fractions == sorted(fractions)                                      # progress only moves forward
    assert ui.computeHeatmapButton.enabled and not ui.topologyCancelButton.enabled
    heatmap = ui.heatmapVolumeSelector.currentNode()
    assert heatmap is widget.w.logic.topology.last["heatmap"]               # a new run updates the same nodes
    np.testing.assert_array_equal(nodes.ijk_to_ras(heatmap), nodes.ijk_to_ras(widget.fixed))
    assert ui.heatmapLegendLabel.text.startswith("Colour 0 / 0.25 / 0.5 / 0.75 / 1 = ")
    display = heatmap.GetNodeReference(REFERENCES["display"])
    ui.heatmapOpacitySlider.value = 30
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        assert composite.GetForegroundVolumeID() == display.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    assert not list(Path(slicer.app.temporaryPath).glob("TopoRegTopology-*"))


def test_cmake_lists_the_topology_modules():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "${MODULE_NAME}Logic/topology_logic.py" in text and "${MODULE_NAME}Logic/topology_display.py" in text
