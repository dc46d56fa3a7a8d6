"""The Neuralizer panel's logic: `NeuralizerLogic` runs the real `toporeg neuralize` CLI in a child process with a
tiny random Neuralizer (support/neuralizer_testing.py) on small synthetic volumes in a real MRML scene; context sets
go through real scene nodes and the library's JSON format. Assertions are on MRML state and on the CLI's files.
The widget driving it: test_neuralizer_widget.py."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest
import slicer
import slicer.util
import vtk

from neuralizer_testing import TIMEOUT, new_logic as _logic, run_in_new_scene as _run, scene
from toporeg_slicer_testing import MiniSlicer
from toporeg.errors import InputError
from toporeg.io import Volume
from TopoRegLogic import neuralizer_context as contexts
from TopoRegLogic import nodes
from TopoRegLogic.neuralizer_logic import DEFAULT_MODEL, PLANES, PROBABILITY_REFERENCE, TASKS, NeuralizerParameters


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory, tiny_neuralizer_model):
    """Task segment, label 2, two pairs: a label map read from disk and a segmentation made in the scene."""
    def params(s, model):
        return NeuralizerParameters(targetVolume=s.target, contextPairs=((s.images[0], s.labels[0]),
                                                                         (s.images[1], s.segmentation)),
                                    labelValue=2, model=model, device="cpu", align=False, probabilityVolume=True)
    run = _run(tmp_path_factory.mktemp("neuralizer_segment"), tiny_neuralizer_model, params)
    yield run
    run.mini.close()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, tiny_neuralizer_model):
    """Task image (the context outputs are inverted images), contexts aligned affinely to the target."""
    def params(s, model):
        return NeuralizerParameters(targetVolume=s.target, task="image", plane="coronal", contextSize=3,
                                    contextPairs=tuple(zip(s.images, s.outputs)), model=model, device="cpu",
                                    opacity=0.8)
    run = _run(tmp_path_factory.mktemp("neuralizer_image"), tiny_neuralizer_model, params)
    yield run
    run.mini.close()


def _from_file(run, name) -> np.ndarray:
    """A CLI output read with nibabel ([i, j, k] order), after checking it is on the target's grid."""
    image = nib.load(str(run.out / name))
    np.testing.assert_allclose(image.affine, nodes.ijk_to_ras(run.s.target), atol=1e-4)
    return np.asarray(image.dataobj)


# --- task segment ------------------------------------------------------------------------------------------
def test_segment_run_reports_progress_and_one_status_line(segment_run):
    run = segment_run
    assert run.seconds < 60, run.seconds                               # a few seconds on 2 loaded cores
    assert run.done == [(True, run.last["status"])]
    status = run.last["status"]
    assert status.startswith("Neuralizer done in ") and "(segment, axial, 2 context pairs): mask " in status, status
    assert " mL" in status
    fractions = [e.fraction for e in run.events]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0.9
    assert {"neuralize", "done"} <= {e.stage for e in run.events}


def test_unchanged_files_are_passed_as_they_are_and_scene_only_nodes_are_written(segment_run):
    run, s = segment_run, segment_run.s
    command = run.runner.log[0]
    on_disk = s.labels[0].GetStorageNode().GetFileName()
    assert f"--context {s.images[0].GetStorageNode().GetFileName()} {on_disk} " in command
    assert "--label-value 2 --no-align" in command and "--task segment" in command
    work = run.runner.work_dir
    assert sorted(p.name for p in work.glob("*.nii.gz")) == ["context_1_image.nii.gz", "context_1_output.nii.gz",
                                                            "target.nii.gz"]
    written = nib.load(str(work / "context_1_output.nii.gz"))        # the segmentation, with its label values
    expected = nodes.volume_from_node(s.labels[1])
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.data)
    np.testing.assert_allclose(written.affine, expected.affine, atol=1e-5)
    assert [c["output"] for c in run.report["contexts"]] == [on_disk, str(work / "context_1_output.nii.gz")]


def test_segmentation_has_one_segment_on_the_target_grid_equal_to_the_prediction(segment_run):
    run, target = segment_run, segment_run.s.target
    seg = run.last["output"]
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "target Neuralizer segmentation"
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1 and segmentation.GetNthSegmentID(0) == "label_1"
    assert segmentation.GetSegment("label_1").GetName() == "White"      # the taught segment's name
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is target
    internal = seg.GetBinaryLabelmapInternalRepresentation("label_1")
    matrix = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(matrix)
    np.testing.assert_array_equal(slicer.util.arrayFromVTKMatrix(matrix), nodes.ijk_to_ras(target))
    prediction = _from_file(run, "prediction.nii.gz")
    assert prediction.shape == target.GetImageData().GetDimensions()
    assert 0.2 < prediction.mean() < 0.8                                # neither empty nor full (support file)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "label_1", target).transpose(2, 1, 0)
    np.testing.assert_array_equal(mask, prediction)
    assert seg.GetAttribute("TopoReg.Neuralizer.task") == "segment"
    assert seg.GetAttribute("TopoReg.Neuralizer.contextPairs") == "2" and seg.GetDisplayNode().GetVisibility()
    for composite in contexts.scene_nodes(run.scene, "vtkMRMLSliceCompositeNode"):
        assert composite.GetBackgroundVolumeID() == target.GetID()


def test_probability_volume_is_on_the_target_grid_and_equals_the_file(segment_run):
    run, target = segment_run, segment_run.s.target
    probability = run.last["probability"]
    assert run.last["output"].GetNodeReference(PROBABILITY_REFERENCE) is probability
    np.testing.assert_array_equal(nodes.ijk_to_ras(probability), nodes.ijk_to_ras(target))
    from_file = _from_file(run, "probability.nii.gz").astype(np.float32)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(probability).transpose(2, 1, 0), from_file)
    display = probability.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)


def test_applying_again_into_the_same_segmentation_adds_no_node(segment_run):
    run = segment_run
    before = run.scene.GetNumberOfNodes()
    again = NeuralizerParameters(**{**vars(run.params), "outputNode": run.last["output"]})
    assert run.logic.apply_results(again, run.out).startswith("Neuralizer done in ")
    assert run.scene.GetNumberOfNodes() == before and run.logic.last["output"] is run.last["output"]
    again.probabilityVolume = False                                   # the stale probability volume goes
    run.logic.apply_results(again, run.out)
    assert run.scene.GetNumberOfNodes() == before - 2                  # the volume and its display node
    assert not run.scene.IsNodePresent(run.last["probability"])


# --- task image --------------------------------------------------------------------------------------------
def test_image_task_makes_a_scalar_volume_on_the_target_grid_shown_over_it(image_run):
    run, target = image_run, image_run.s.target
    assert run.done == [(True, run.last["status"])]
    assert "(image, coronal, 2 context pairs): output range " in run.last["status"]
    volume = run.last["output"]
    assert volume.IsA("vtkMRMLScalarVolumeNode") and not volume.IsA("vtkMRMLLabelMapVolumeNode")
    assert volume.GetName() == "target Neuralizer output"
    np.testing.assert_array_equal(nodes.ijk_to_ras(volume), nodes.ijk_to_ras(target))
    from_file = _from_file(run, "prediction.nii.gz").astype(np.float32)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume).transpose(2, 1, 0), from_file)
    assert run.last["probability"] is None and not (run.out / "probability.nii.gz").exists()
    for composite in contexts.scene_nodes(run.scene, "vtkMRMLSliceCompositeNode"):
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (target.GetID(),
                                                                                         volume.GetID())
        assert composite.GetForegroundOpacity() == pytest.approx(0.8)
    command = run.runner.log[0]
    assert "--task image" in command and "--context-size 3" in command and "--no-align" not in command
    assert "--label-value" not in command and run.report["align"] is True
    assert all("affine_ras" in c for c in run.report["contexts"])


# --- arguments and choices ---------------------------------------------------------------------------------
def test_cli_arguments_and_choices_match_the_library(mini_slicer, tmp_path):
    from toporeg.cli import neuralize_cmd
    from toporeg.neuralizer import context_sets

    assert (TASKS, PLANES) == (context_sets.TASKS, context_sets.PLANES)
    logic, out = _logic(mini_slicer, tmp_path), tmp_path / "out"
    params = NeuralizerParameters(task="segment", labelValue=3, contextSize=8, model=" m.safetensors ", align=False,
                                  plane="sagittal", device="cpu")
    assert logic.cli_arguments(params, ["t.nii", "--context", "a", "b"], out) == [
        "neuralize", "t.nii", "--context", "a", "b", "--task", "segment", "--out", str(out), "--plane", "sagittal",
        "--model", "m.safetensors", "--device", "cpu", "--label-value", "3", "--context-size", "8", "--no-align"]
    defaults = NeuralizerParameters(task="image", labelValue=3)      # the label value only applies to segment
    assert logic.cli_arguments(defaults, ["t.nii"], out) == [
        "neuralize", "t.nii", "--task", "image", "--out", str(out), "--plane", "axial", "--model", DEFAULT_MODEL,
        "--device", "auto"]
    parser = argparse.ArgumentParser()
    neuralize_cmd.register(parser.add_subparsers())
    assert parser.parse_args(["neuralize", "t.nii", "--out", "o"]).model == DEFAULT_MODEL


# --- bad input: a clear error before anything starts ------------------------------------------------------
BAD_INPUT = [
    ("no target", {"targetVolume": None}, "select a target volume"),
    ("labelmap target", {"targetVolume": "labels0"}, "the target must be a scalar volume"),
    ("no pairs", {"contextPairs": ()}, "add at least one context pair"),
    ("label absent", {"labelValue": 7}, r"context pair 1: label value 7 is absent from 'context 0 labels' "
                                        r"\(its labels: 1, 2\)"),
    ("empty labels", {"contextPairs": "empty"}, "context pair 1: label map 'empty' is empty"),
    ("segmentation for image task", {"task": "image", "contextPairs": "segmentation"},
     "context pair 1: task 'image' needs an output volume"),
    ("output is the image", {"contextPairs": "same"}, "the output must be another node than the image"),
    ("deleted node", {"contextPairs": "deleted"}, "context pair 1: 'context 1 labels' was removed from the scene"),
    ("model file", {"model": "/no/such/neuralizer.safetensors"}, "model file not found"),
    ("plane", {"plane": "oblique"}, "unknown plane 'oblique'"),
    ("output is an input", {"outputNode": "labels0"}, "must be a new segmentation, not an input"),
]


@pytest.mark.parametrize("change, message", [(c, m) for _, c, m in BAD_INPUT], ids=[i for i, _, _ in BAD_INPUT])
def test_bad_input_gives_a_clear_error_before_anything_starts(mini_slicer, tmp_path, change, message):
    s, change = scene(mini_slicer, tmp_path), dict(change)
    empty = nodes.new_volume_node(mini_slicer.scene, Volume(np.zeros((6, 6, 6), np.uint8), np.eye(4), is_label=True),
                                  "empty")
    pairs = {"empty": ((s.images[1], empty),), "segmentation": ((s.images[1], s.segmentation),),
             "same": ((s.images[1], s.images[1]),), "deleted": ((s.images[1], s.labels[1]),)}
    if change.get("contextPairs") == "deleted":
        mini_slicer.scene.RemoveNode(s.labels[1])
    change = {k: (s.labels[0] if v == "labels0" else pairs.get(v, v) if isinstance(v, str) else v)
              for k, v in change.items()}
    logic = _logic(mini_slicer, tmp_path)
    before = mini_slicer.scene.GetNumberOfNodes()
    params = NeuralizerParameters(**{"targetVolume": s.target, "contextPairs": ((s.images[0], s.labels[0]),),
                                     **change})
    with pytest.raises(InputError, match=message):
        logic.start_background(params)
    assert mini_slicer.scene.GetNumberOfNodes() == before and logic.runner is None
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_a_failing_run_reports_the_cli_error_and_adds_nothing(mini_slicer, tmp_path, tiny_neuralizer_model):
    s = scene(mini_slicer, tmp_path)
    flat = nodes.new_volume_node(mini_slicer.scene, Volume(np.ones((16, 16, 8), np.float32), np.eye(4)), "flat")
    logic, done = _logic(mini_slicer, tmp_path), []
    before = mini_slicer.scene.GetNumberOfNodes()
    params = NeuralizerParameters(targetVolume=flat, contextPairs=((s.images[0], s.labels[0]),),
                                  model=str(tiny_neuralizer_model), device="cpu", align=False)
    runner = logic.start_background(params, on_done=lambda ok, status: done.append((ok, status)))
    assert runner.wait(timeout=TIMEOUT, interval=0.05) == "failed"
    status = logic.last["status"]
    assert status == "Failed: target 'flat': target image: image is constant (every voxel = 1.0); nothing to " \
                     "register or segment", status
    assert done == [(False, status)] and "toporeg.cli.main neuralize" in logic.last["log"]
    assert mini_slicer.scene.GetNumberOfNodes() == before
    assert not list((tmp_path / "work").glob("*"))


def test_a_cancelled_run_adds_no_nodes_and_leaves_no_files(mini_slicer, tmp_path, tiny_neuralizer_model):
    s = scene(mini_slicer, tmp_path)
    logic, done = _logic(mini_slicer, tmp_path), []
    before = mini_slicer.scene.GetNumberOfNodes()
    params = NeuralizerParameters(targetVolume=s.target, contextPairs=((s.images[0], s.labels[0]),),
                                  model=str(tiny_neuralizer_model), device="cpu")
    runner = logic.start_background(params, on_done=lambda ok, status: done.append((ok, status)))
    with pytest.raises(InputError, match="a Neuralizer run is already going"):
        logic.start_background(params)
    logic.cancel()                                       # the cancel file exists before the CLI starts working
    assert runner.wait(timeout=TIMEOUT, interval=0.05) == "cancelled"
    assert done == [(False, "Cancelled; no outputs were written.")]
    assert mini_slicer.scene.GetNumberOfNodes() == before
    assert contexts.scene_nodes(mini_slicer.scene, "vtkMRMLSegmentationNode") == [s.segmentation]
    assert not list((tmp_path / "work").glob("*"))


# --- context pairs and context sets -------------------------------------------------------------------------
def test_pair_outputs_become_label_maps_on_the_image_grid(mini_slicer, tmp_path):
    s = scene(mini_slicer, tmp_path)
    labels = nodes.volume_from_node(s.labels[1]).data
    from_segmentation = contexts.output_volume(s.images[1], s.segmentation, "segment")
    np.testing.assert_array_equal(from_segmentation.data, labels)              # label values kept
    np.testing.assert_allclose(from_segmentation.affine, nodes.ijk_to_ras(s.images[1]), atol=1e-6)
    coarse = nodes.volume_from_node(s.labels[1])
    coarse.affine[:3, :3] *= 2                                                   # labels kept at another size
    coarse = coarse.with_data(np.ascontiguousarray(labels[::2, ::2, ::2]))
    other = nodes.new_volume_node(mini_slicer.scene, coarse, "coarse")
    assert not contexts.on_image_grid(s.images[1], other)
    resampled = contexts.output_volume(s.images[1], other, "segment")
    assert resampled.spatial_shape == s.images[1].GetImageData().GetDimensions()
    np.testing.assert_array_equal(resampled.data[::2, ::2, ::2], coarse.data)   # nearest neighbour


def test_context_set_round_trip_in_the_scene(mini_slicer, tmp_path):
    s = scene(mini_slicer, tmp_path, n_pairs=3)
    logic = _logic(mini_slicer, tmp_path)
    params = NeuralizerParameters(contextPairs=((s.images[0], s.labels[0]), (s.images[2], s.segmentation),
                                                (s.images[1], s.labels[1])), labelValue=2, plane="coronal",
                                  contextSize=6)
    path = logic.save_context_set(params, "white matter", to_folder=False)
    assert path is None and logic.context_set_names() == ["white matter"]
    node = contexts.find_scene_set(mini_slicer.scene, "white matter")
    assert node.IsA("vtkMRMLScriptedModuleNode") and node.GetAttribute("ModuleName") is None
    loaded = logic.load_context_set("white matter")
    assert loaded.pairs == list(params.contextPairs) and loaded.dropped == 0
    assert (loaded.task, loaded.labelValue, loaded.plane, loaded.contextSize) == ("segment", 2, "coronal", 6)
    logic.save_context_set(NeuralizerParameters(contextPairs=params.contextPairs[:1], task="segment"),
                           "white matter", to_folder=False)               # saving again replaces the pairs
    assert len(logic.load_context_set("white matter").pairs) == 1
    logic.save_context_set(params, "white matter", to_folder=False)
    scene_file = mini_slicer.scene                                           # the set is saved with the scene
    scene_file.SetSaveToXMLString(1)
    scene_file.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetLoadFromXMLString(1)
    reloaded.SetSceneXMLString(scene_file.GetSceneXMLString())
    reloaded.Import()
    again = contexts.read_scene_set(contexts.find_scene_set(reloaded, "white matter"))
    assert [(i.GetID(), o.GetID()) for i, o in again.pairs] == [(i.GetID(), o.GetID()) for i, o in loaded.pairs]
    assert all(reloaded.IsNodePresent(node) for pair in again.pairs for node in pair) and again.labelValue == 2
    mini_slicer.scene.RemoveNode(s.images[2])                               # a deleted node drops only its pair
    loaded = logic.load_context_set("white matter")
    assert loaded.pairs == [params.contextPairs[0], params.contextPairs[2]] and loaded.dropped == 1


def test_context_set_round_trip_through_json_in_the_user_folder(mini_slicer, tmp_path):
    from toporeg.neuralizer.context_sets import ContextSet

    s = scene(mini_slicer, tmp_path)
    logic = _logic(mini_slicer, tmp_path)
    pairs = ((s.images[0], s.labels[0]), (s.images[1], s.segmentation))
    path = logic.save_context_set(NeuralizerParameters(contextPairs=pairs, labelValue=1, plane="sagittal"), "Grey")
    assert path == tmp_path / "sets" / "Grey.json"
    saved = ContextSet.load(path)
    assert [p.resolve() for p in saved.pairs[0]] == [tmp_path / "context0_image.nii.gz",
                                                       tmp_path / "context0_labels.nii.gz"]  # files on disk kept
    assert saved.pairs[1][0].parent == tmp_path / "sets" / "Grey_files"      # scene-only nodes written beside it
    assert (saved.task, saved.label_value, saved.plane) == ("segment", 1, "sagittal")
    other = MiniSlicer(tmp_path / "other")                                   # another session: empty scene
    logic2 = _logic(other, tmp_path)
    assert logic2.context_set_names() == ["Grey"]
    loaded = logic2.load_context_set("Grey")
    assert (loaded.name, loaded.labelValue, loaded.plane, len(loaded.pairs)) == ("Grey", 1, "sagittal", 2)
    for (image, output), (image0, output0) in zip(loaded.pairs, pairs):
        assert image.IsA("vtkMRMLScalarVolumeNode") and nodes.is_labelmap(output)
        for new, expected in ((image, nodes.volume_from_node(image0)),
                              (output, contexts.output_volume(image0, output0, "segment"))):
            np.testing.assert_array_equal(nodes.volume_from_node(new).data, expected.data)
            np.testing.assert_allclose(nodes.ijk_to_ras(new), expected.affine, atol=1e-5)
    again = logic2.import_context_set(path)                                  # files already loaded are reused
    assert [p for pair in again.pairs for p in pair] == [p for pair in loaded.pairs for p in pair]
    other.close()
    with pytest.raises(InputError, match="no context set named 'nothing'"):
        logic.load_context_set("nothing")
    with pytest.raises(InputError, match="the context set is empty"):
        logic.save_context_set(NeuralizerParameters(), "empty")
    with pytest.raises(InputError, match="give the context set a name"):
        logic.save_context_set(NeuralizerParameters(contextPairs=pairs), " / ")


def test_image_task_sets_export_without_a_label_value(mini_slicer, tmp_path):
    s = scene(mini_slicer, tmp_path)
    logic = _logic(mini_slicer, tmp_path)
    path = logic.export_context_set(NeuralizerParameters(contextPairs=tuple(zip(s.images, s.outputs)), task="image",
                                                         labelValue=4), tmp_path / "share" / "invert.json", "invert")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert (raw["name"], raw["task"], raw["label_value"], len(raw["pairs"])) == ("invert", "image", None, 2)
    assert raw["pairs"][1]["output"] == "invert_files/context_1_output.nii.gz"
