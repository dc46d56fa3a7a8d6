"""The uncertainty panel: `UncertaintyLogic` runs the real `toporeg segment` CLI in a child process on the bundled
MNI152 T1 (every other voxel: 4 mm) with a tiny MC-dropout U-Net trained for a few steps (support/
uncertainty_testing.py), in a real MRML scene. Assertions are on MRML state and on the pixels the slice logic blends.
The widget driving it: test_uncertainty_widget.py."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import slicer
import slicer.util
import vtk

from toporeg_slicer_testing import MiniSlicer, assert_overlay_on_every_slice_view, blended_slice
from uncertainty_testing import TIMEOUT, input_node
from toporeg.errors import InputError
from toporeg.io import Volume
from TopoRegLogic import nodes
from TopoRegLogic import topology_display as overlay
from TopoRegLogic import uncertainty_display as segdisplay
from TopoRegLogic.uncertainty_logic import REFERENCES, UncertaintyLogic, UncertaintyParameters

SAMPLES = 4
NAMES = ["CSF", "Grey matter", "White matter"]
CODES = [("65216001", "Cerebrospinal Fluid"), ("389081007", "Gray Matter"), ("389080008", "White Matter")]


def _wait(runner, timeout=TIMEOUT):
    return runner.wait(timeout=timeout, interval=0.05)


# --- one real run, many checks -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_segmentation_model):
    temp = tmp_path_factory.mktemp("uncertainty")
    mini = MiniSlicer(temp)
    source = input_node(mini)
    logic = UncertaintyLogic(mini.scene, temp_root=temp / "work", keep_temp=True)
    params = UncertaintyParameters(inputVolume=source, model=str(tiny_segmentation_model), samples=SAMPLES,
                                   device="cpu", probabilityVolumes=True, opacity=0.6, threshold=0.2)
    events, done = [], []
    start = time.perf_counter()
    runner = logic.start_background(params, events.append, lambda ok, status: done.append((ok, status)))
    state = _wait(runner)
    seconds = time.perf_counter() - start
    assert state == "succeeded", runner.full_log()
    out = runner.work_dir / "out"
    yield SimpleNamespace(mini=mini, scene=mini.scene, source=source, logic=logic, params=params, runner=runner,
                          events=events, done=done, out=out, seconds=seconds, last=dict(logic.last),
                          report=json.loads((out / "report.json").read_text(encoding="utf-8")))
    mini.close()


def _file(run, name) -> np.ndarray:
    """A CLI output read with nibabel ([i, j, k] order), after checking it is on the input's grid."""
    image = nib.load(str(run.out / name))
    np.testing.assert_allclose(image.affine, nodes.ijk_to_ras(run.source), atol=1e-4)
    return np.asarray(image.dataobj)


def _anatomy_types(terminologies, context=segdisplay.TERMINOLOGY_CONTEXT) -> dict[str, tuple]:
    """Type code -> (meaning, recommended colour) of the "Anatomical Structure" category in Slicer's loaded list."""
    for index in range(terminologies.GetNumberOfCategoriesInTerminology(context)):
        category = slicer.vtkSlicerTerminologyCategory()
        terminologies.GetNthCategoryInTerminology(context, index, category)
        if category.GetCodeValue() == segdisplay.CATEGORY[0]:
            found = {}
            for n in range(terminologies.GetNumberOfTypesInTerminologyCategory(context, category)):
                kind = slicer.vtkSlicerTerminologyType()
                terminologies.GetNthTypeInTerminologyCategory(context, category, n, kind)
                found[kind.GetCodeValue()] = (kind.GetCodeMeaning(), kind.GetRecommendedDisplayRGBValue())
            return found
    return {}


def _segment_array(seg, segment_id, reference) -> np.ndarray:
    """A segment's voxels on `reference`'s grid, [i, j, k]."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, reference).transpose(2, 1, 0)


def test_run_finishes_with_progress_and_one_status_line(run):
    assert run.seconds < 120, run.seconds
    assert run.done == [(True, run.last["status"])]
    status = run.last["status"]
    assert status.startswith("Segmentation done in ") and f"(mcdropout, {SAMPLES} samples)" in status, status
    assert "of 2 bits" in status and "CSF" in status and "White matter" in status and " mL" in status
    fractions = [e.fraction for e in run.events]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0.9
    assert {"segment", "done"} <= {e.stage for e in run.events} and len({e.message for e in run.events}) > 2


def test_segmentation_node_has_the_labels_with_standard_terminology(run):
    seg = run.last["segmentation"]
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "MNI152 segmentation (mcdropout)"
    segmentation = seg.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == ["label_1", "label_2", "label_3"]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == NAMES
    terminologies = run.mini.logics["Terminologies"]
    slicer_list = _anatomy_types(terminologies)              # Slicer's own list, loaded from its .term.json
    assert len(slicer_list) > 100
    for sid, (code, meaning) in zip(ids, CODES):
        segment = segmentation.GetSegment(sid)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTerminologyContextName() == "Segmentation category and type - DICOM master list"
        category, kind = entry.GetCategoryObject(), entry.GetTypeObject()
        assert (category.GetCodingSchemeDesignator(), category.GetCodeValue()) == ("SCT", "123037004")
        assert (kind.GetCodingSchemeDesignator(), kind.GetCodeValue(), kind.GetCodeMeaning()) == ("SCT", code, meaning)
        assert slicer_list[code][0] == meaning
        assert np.allclose(segment.GetColor(), np.array(slicer_list[code][1]) / 255.0)


def test_segmentation_lives_on_the_input_grid_and_equals_the_label_file(run):
    seg, source = run.last["segmentation"], run.source
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is source
    labels = _file(run, "labels.nii.gz")
    assert labels.shape == source.GetImageData().GetDimensions()
    for value in (1, 2, 3):
        internal = seg.GetBinaryLabelmapInternalRepresentation(f"label_{value}")
        matrix = vtk.vtkMatrix4x4()
        internal.GetImageToWorldMatrix(matrix)
        np.testing.assert_array_equal(slicer.util.arrayFromVTKMatrix(matrix), nodes.ijk_to_ras(source))
        np.testing.assert_array_equal(_segment_array(seg, f"label_{value}", source), labels == value)
    assert (labels > 0).sum() > 1000 and len(np.unique(labels)) >= 3        # the tiny model found the brain


def test_entropy_volume_is_on_the_input_grid_and_equals_the_file(run):
    entropy = run.last["entropy"]
    assert entropy.IsA("vtkMRMLScalarVolumeNode") and entropy.GetName() == "MNI152 uncertainty (entropy)"
    np.testing.assert_array_equal(nodes.ijk_to_ras(entropy), nodes.ijk_to_ras(run.source))
    from_file = _file(run, "entropy.nii.gz").astype(np.float32)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(entropy).transpose(2, 1, 0), from_file)
    assert 0.0 <= from_file.min() and from_file.max() <= 2.0 + 1e-5 and from_file.max() > 1.0
    assert run.last["segmentation"].GetNodeReference(REFERENCES["entropy"]) is entropy
    assert entropy.GetAttribute("TopoReg.Units").startswith("bits per voxel")
    assert overlay.legend_from_node(entropy) == {"0": "0 bits", "0.25": "0.5 bits", "0.5": "1 bits",
                                                 "0.75": "1.5 bits", "1": "2 bits"}
    assert overlay.legend_text(run.last["legend"], "bits") == \
        "Colour 0 / 0.25 / 0.5 / 0.75 / 1 = 0 / 0.5 / 1 / 1.5 / 2 bits per voxel"
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(entropy)           # the colour bar in the views
    assert legend.GetTitleText() == "Uncertainty (entropy), bits per voxel" and legend.GetVisibility()


def test_entropy_is_the_foreground_of_every_slice_view_with_a_fixed_window(run):
    composites = assert_overlay_on_every_slice_view(run.scene, run.source, run.last["entropy"], opacity=0.6,
                                                    window=(0.0, math.log2(4)), threshold=0.2,
                                                    color_name=overlay.COLOR_NAME)
    run.logic.set_opacity(0.3)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.3) for c in composites)
    run.logic.set_opacity(0.6)


def test_blended_slice_shows_colour_where_the_entropy_is_high(run):
    """The slice logic's own blending (no OpenGL), pixel by pixel against the entropy of the voxel under it."""
    entropy_node, source = run.last["entropy"], run.source
    entropy = nodes.volume_from_node(entropy_node).data
    slice_logic = run.mini.slice_logics[0]                                  # Red: axial
    slice_node = slice_logic.GetSliceNode()
    slice_node.SetDimensions(96, 96, 1)
    slice_logic.FitSliceToAll()
    brainiest = int(np.argmax((entropy > 1.0).sum(axis=(0, 1))))           # the axial slice with most uncertainty
    centre = nodes.ijk_to_ras(source) @ np.array([entropy.shape[0] / 2, entropy.shape[1] / 2, brainiest, 1.0])
    slice_node.JumpSliceByCentering(*centre[:3])
    entropy_node.GetDisplayNode().SetInterpolate(0)                         # nearest: one voxel per pixel

    try:
        plain, shown = blended_slice(slice_logic, 0.0), blended_slice(slice_logic, 0.6)
    finally:
        slice_logic.GetSliceCompositeNode().SetForegroundOpacity(0.6)
        entropy_node.GetDisplayNode().SetInterpolate(1)
    width, height, _ = slice_node.GetDimensions()
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))              # scalar index = y * width + x
    xy = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size), np.ones(xs.size)])
    ijk = np.linalg.inv(nodes.ijk_to_ras(source)) @ slicer.util.arrayFromVTKMatrix(slice_node.GetXYToRAS()) @ xy
    ijk = np.floor(ijk[:3] + 0.5).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(entropy.shape)[:, None]), axis=0)
    under = np.full(xs.size, -1.0)
    under[inside] = entropy[tuple(ijk[:, inside])]
    changed = np.abs(shown - plain)[:, :3].sum(1) > 3
    high, low = under > 0.2 + 0.3, (under >= 0) & (under < 0.2 - 0.1)
    assert high.sum() > 50 and low.sum() > 50, (high.sum(), low.sum())
    assert changed[high].mean() > 0.95, changed[high].mean()              # coloured where uncertain
    assert changed[low].mean() < 0.05, changed[low].mean()                # transparent where confident
    top = shown[under > 1.6]                                                # inferno's top is yellow-white
    assert len(top) and (top[:, 0] >= top[:, 2]).mean() > 0.9


def test_sampled_masks_cycle_through_different_masks(run):
    seg, samples = run.last["segmentation"], run.last["samples"]
    assert samples.IsA("vtkMRMLSegmentationNode") and seg.GetNodeReference(REFERENCES["samples"]) is samples
    assert samples.GetName() == "MNI152 segmentation (mcdropout) sampled masks"
    assert samples.GetAttribute(segdisplay.SAMPLE_COUNT) == str(SAMPLES)
    segmentation = samples.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == SAMPLES * 3
    assert segmentation.GetSegment("sample_01_label_2").GetName() == "Grey matter (sample 2)"
    assert segmentation.GetSegment("sample_01_label_2").GetTerminology() == \
        seg.GetSegmentation().GetSegment("label_2").GetTerminology()
    masks = []
    for index in range(SAMPLES):                                            # each sample equals its file
        from_file = _file(run, f"samples/sample_{index:02d}.nii.gz")
        mask = sum(v * _segment_array(samples, f"sample_{index:02d}_label_{v}", run.source) for v in (1, 2, 3))
        np.testing.assert_array_equal(mask, from_file)
        masks.append(mask)
    assert any(not np.array_equal(masks[0], m) for m in masks[1:]), "MC-dropout samples should differ"
    assert run.report["metrics"]["sample_diversity"] > 0

    def visible():
        display = samples.GetDisplayNode()
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        return (bool(seg.GetDisplayNode().GetVisibility()), bool(display.GetVisibility()),
                sorted(sid for sid in ids if display.GetSegmentVisibility(sid)))

    assert visible()[:2] == (True, False)                                   # after a run: the mean
    lines = [run.logic.next_sample() for _ in range(SAMPLES + 1)]
    assert lines == [f"Showing sampled mask {i} of {SAMPLES}" for i in range(1, SAMPLES + 1)] + \
        ["Showing the mean segmentation"]
    assert run.logic.show_sample(SAMPLES + 2) == "Showing sampled mask 3 of 4"  # wraps around
    assert visible() == (False, True, ["sample_02_label_1", "sample_02_label_2", "sample_02_label_3"])
    assert segdisplay.shown_sample(samples) == 2
    assert run.logic.show_sample(None) == "Showing the mean segmentation"
    assert visible()[:2] == (True, False) and segdisplay.shown_sample(samples) is None


def test_probability_volumes_equal_the_file_channels(run):
    volumes = run.last["probabilities"]
    assert [v.GetName() for v in volumes] == [f"MNI152 P({name})" for name in NAMES]
    from_file = _file(run, "probabilities.nii.gz").reshape(*run.source.GetImageData().GetDimensions(), 4)
    np.testing.assert_allclose(from_file.sum(-1), 1.0, atol=1e-5)
    seg = run.last["segmentation"]
    for index, node in enumerate(volumes):
        assert seg.GetNthNodeReference(REFERENCES["probability"], index) is node
        np.testing.assert_array_equal(nodes.ijk_to_ras(node), nodes.ijk_to_ras(run.source))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node).transpose(2, 1, 0), from_file[..., index + 1])
        display = node.GetDisplayNode()
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)


def test_applying_again_updates_the_same_nodes(run):
    before = run.scene.GetNumberOfNodes()
    again = UncertaintyParameters(**{**vars(run.params), "segmentation": run.last["segmentation"]})
    assert run.logic.apply_results(again, run.out).startswith("Segmentation done in ")
    assert run.scene.GetNumberOfNodes() == before
    for role in ("segmentation", "entropy", "samples"):
        assert run.logic.last[role] is run.last[role], role
    again.probabilityVolumes = False                                       # the stale P volumes go
    run.logic.apply_results(again, run.out)
    assert run.logic.last["probabilities"] == [] and run.scene.GetNumberOfNodes() == before - 2 * 3
    assert not any(run.scene.IsNodePresent(v) for v in run.last["probabilities"])
    assert run.last["segmentation"].GetSegmentation().GetNumberOfSegments() == 3


def test_an_output_off_the_input_grid_adds_no_node(run, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    labels = nib.load(str(out / "labels.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj)[:-1], labels.affine), str(out / "labels.nii.gz"))
    before = run.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="output labels is not on the grid of 'MNI152'"):
        run.logic.apply_results(UncertaintyParameters(inputVolume=run.source), out)
    assert run.scene.GetNumberOfNodes() == before


# --- terminology, arguments, errors, cancel ----------------------------------------------------------------
def test_brain_and_unknown_labels(mini_slicer):
    slicer_list = _anatomy_types(mini_slicer.logics["Terminologies"])
    for term in segdisplay.TERMS.values():                  # every code of the table is in Slicer's list
        assert slicer_list[term.code[0]] == (term.code[2], term.color)
    seg = mini_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert segdisplay.define_segments(seg, {0: "background", 1: "brain"}) == ["label_1"]
    brain = seg.GetSegmentation().GetSegment("label_1")
    assert brain.GetName() == "Brain" and "SCT^12738006^Brain" in brain.GetTerminology()
    assert segdisplay.label_term("Grey matter") is segdisplay.TERMS["gm"]
    assert segdisplay.define_segments(seg, {0: "background", 1: "hippocampus"}, sample=0) == ["sample_00_label_1"]
    assert seg.GetSegmentation().GetSegment("sample_00_label_1").GetName() == "hippocampus (sample 1)"


def test_cli_arguments_are_built_from_the_parameters(mini_slicer, tmp_path):
    logic, out = UncertaintyLogic(mini_slicer.scene), tmp_path / "out"
    assert logic.cli_arguments(UncertaintyParameters(), "in.nii", out) == [
        "segment", "in.nii", "--out", str(out), "--model", "unet", "--task", "tissue", "--samples", "16",
        "--save-samples", "16", "--device", "auto"]
    # a model file's card says its task; only 16 sampled masks are kept
    assert logic.cli_arguments(UncertaintyParameters(model=" /m/seg.safetensors ", task="brain", samples=40,
                                                     device="cpu"), "in.nii", out) == [
        "segment", "in.nii", "--out", str(out), "--model", "/m/seg.safetensors", "--samples", "40",
        "--save-samples", "16", "--device", "cpu"]


@pytest.mark.parametrize("change, message", [
    ({"inputVolume": None}, "select an input volume"),
    ({"inputVolume": "labelmap"}, "the input must be a scalar volume"),
    ({"model": " "}, "choose a model"),
    ({"model": "/no/such/model.safetensors"}, "model file not found: /no/such/model.safetensors"),
    ({"task": "ambiguous"}, "unknown task 'ambiguous'"),
    ({"samples": 0}, "samples must be at least 1"),
])
def test_bad_input_gives_a_clear_error_before_anything_starts(mini_slicer, tmp_path, change, message):
    scene, change = mini_slicer.scene, dict(change)
    source = nodes.new_volume_node(scene, Volume(np.random.default_rng(0).random((8, 8, 8), np.float32),
                                                 np.eye(4)), "t1")
    if change.get("inputVolume") == "labelmap":
        change["inputVolume"] = nodes.new_volume_node(scene, Volume(np.ones((8, 8, 8), np.uint8), np.eye(4),
                                                                    is_label=True), "mask")
    logic = UncertaintyLogic(scene, temp_root=tmp_path / "work")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message):
        logic.start_background(UncertaintyParameters(**{"inputVolume": source, **change}))
    assert scene.GetNumberOfNodes() == before and logic.runner is None
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_a_failing_run_reports_the_cli_error_and_adds_nothing(mini_slicer, tmp_path, tiny_segmentation_model):
    scene = mini_slicer.scene
    flat = nodes.new_volume_node(scene, Volume(np.ones((16, 16, 12), np.float32), np.diag([4.0, 4, 4, 1])), "flat")
    logic = UncertaintyLogic(scene, temp_root=tmp_path / "work")
    before, done = scene.GetNumberOfNodes(), []
    params = UncertaintyParameters(inputVolume=flat, model=str(tiny_segmentation_model), samples=2, device="cpu")
    runner = logic.start_background(params, on_done=lambda ok, s: done.append((ok, s)))
    assert _wait(runner) == "failed"
    status = logic.last["status"]
    assert status == "Failed: input volume 'flat': image is constant (every voxel = 1.0); nothing to register or " \
                     "segment", status
    assert done == [(False, status)] and "toporeg.cli.main segment" in logic.last["log"]
    assert scene.GetNumberOfNodes() == before and not slicer.util.getNodesByClass("vtkMRMLSegmentationNode", scene)
    assert not list((tmp_path / "work").glob("*"))


def test_a_cancelled_run_adds_no_nodes_and_leaves_no_files(mini_slicer, tmp_path, tiny_segmentation_model):
    scene = mini_slicer.scene
    source = input_node(mini_slicer)
    logic = UncertaintyLogic(scene, temp_root=tmp_path / "work")
    before, done = scene.GetNumberOfNodes(), []
    params = UncertaintyParameters(inputVolume=source, model=str(tiny_segmentation_model), device="cpu")
    runner = logic.start_background(params, on_done=lambda ok, s: done.append((ok, s)))
    with pytest.raises(InputError, match="a segmentation is already running"):
        logic.start_background(UncertaintyParameters(inputVolume=source, model=str(tiny_segmentation_model)))
    logic.cancel()                                         # the cancel file exists before the CLI starts working
    assert _wait(runner) == "cancelled"
    assert done == [(False, "Cancelled; no outputs were written.")]
    assert scene.GetNumberOfNodes() == before and not slicer.util.getNodesByClass("vtkMRMLSegmentationNode", scene)
    assert not list((tmp_path / "work").glob("*"))
    with pytest.raises(InputError, match="run a segmentation first"):
        logic.next_sample()
