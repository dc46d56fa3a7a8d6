"""Shared pieces of the Neuralizer panel tests (logic and widget): a tiny random Neuralizer model and small synthetic
scenes (a target on an oblique grid, context pairs as label maps, segmentations and output volumes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from toporeg_slicer_testing import MiniSlicer, blobs, oblique_affine

TIMEOUT = 300  # seconds for one background run on a loaded 2-core machine
SHAPE = (20, 18, 12)
TARGET_AFFINE = oblique_affine((1.5, 1.8, 2.5))
CONTEXT_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # axis-aligned 2 mm, centred on the target: they overlap
CONTEXT_AFFINE[:3, 3] = (TARGET_AFFINE @ np.append((np.array(SHAPE) - 1) / 2, 1))[:3] - (np.array(SHAPE) - 1)


def train_tiny_neuralizer(folder: Path) -> Path:
    """A random (untrained) `Neuralizer(channels=4, levels=2)` saved with a card as the CLI expects: fast to run,
    its outputs are arbitrary but deterministic, which is all the panel's plumbing needs. Its output layer is
    amplified and shifted so that, on this file's scenes, its mask is about half of the target (neither empty nor
    full: a mask/segment mix-up or an off-grid result shows in the tests)."""
    import torch
    from toporeg.io import Volume
    from toporeg.models.weights import save_model
    from toporeg.neuralizer.inference import neuralize
    from toporeg.neuralizer.model import SEG_GAIN, Neuralizer

    torch.manual_seed(0)
    model = Neuralizer(channels=4, levels=2).eval()
    card = {"neuralizer": {"spacing_mm": 2.0, "max_context": 4}}
    target = Volume(blobs(SHAPE, seed=10), TARGET_AFFINE.copy())
    contexts = [(Volume(blobs(SHAPE, seed=i), CONTEXT_AFFINE.copy()),
                 Volume(labels_of(blobs(SHAPE, seed=i)), CONTEXT_AFFINE.copy(), is_label=True)) for i in range(2)]
    with torch.no_grad():
        model.out.weight.mul_(5.0)
        p = neuralize(target, contexts, model=model, card=card, label_value=2, align=False, device="cpu").probability
        y = 0.5 + torch.logit(torch.from_numpy(np.asarray(p.data, np.float64)), eps=1e-6) / SEG_GAIN  # raw output
        model.out.bias.add_(float(0.5 - y.median()))
    weights, _ = save_model(model, Path(folder) / "tiny_neuralizer", card=card)
    return weights


def labels_of(image: np.ndarray) -> np.ndarray:
    """Two labels (1: bright, 2: brightest) of a blob image, as uint8."""
    return (np.digitize(image, [0.45, 0.75])).astype(np.uint8)


def scene(mini, folder: Path, n_pairs: int = 2) -> SimpleNamespace:
    """Target (oblique 1.5/1.8/2.5 mm grid) and context pairs: pair 0 read from NIfTI files through Slicer's storage
    nodes (unchanged: passed to the CLI by their own files), the others made in memory (written by the logic); plus
    a segmentation of the last pair's labels and an 'image task' output volume for every pair."""
    from toporeg.io import Volume, save_volume

    from TopoRegLogic import nodes

    target = nodes.new_volume_node(mini.scene, Volume(blobs(SHAPE, seed=10), TARGET_AFFINE.copy()), "target")
    images, labels, outputs = [], [], []
    for index in range(n_pairs):
        image = blobs(SHAPE, seed=index)
        image_volume = Volume(image, CONTEXT_AFFINE.copy())
        label_volume = Volume(labels_of(image), CONTEXT_AFFINE.copy(), is_label=True)
        output_volume = Volume((1.0 - image).astype(np.float32), CONTEXT_AFFINE.copy())  # the "invert" task
        if index == 0:
            paths = [save_volume(v, Path(folder) / f"context0_{role}.nii.gz")
                     for v, role in ((image_volume, "image"), (label_volume, "labels"))]
            images.append(nodes.load_volume_node(mini.scene, paths[0], "context 0"))
            labels.append(nodes.load_volume_node(mini.scene, paths[1], "context 0 labels", label=True))
        else:
            images.append(nodes.new_volume_node(mini.scene, image_volume, f"context {index}"))
            labels.append(nodes.new_volume_node(mini.scene, label_volume, f"context {index} labels"))
        outputs.append(nodes.new_volume_node(mini.scene, output_volume, f"context {index} inverted"))
    segmentation = segmentation_from_labels(mini, labels[-1], {1: "Grey", 2: "White"})
    return SimpleNamespace(target=target, images=images, labels=labels, outputs=outputs, segmentation=segmentation)


def segmentation_from_labels(mini, labelmap, names: dict[int, str]):
    """A segmentation node made from a label map the way Slicer does (one segment per label, label values kept)."""
    import slicer

    seg = mini.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{labelmap.GetName()} segmentation")
    seg.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
    segmentation = seg.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segment.SetName(names[segment.GetLabelValue()])
    return seg


def new_logic(mini, folder: Path, **options):
    """A `NeuralizerLogic` writing its runs under folder/work and its context sets under folder/sets."""
    from TopoRegLogic.neuralizer_logic import NeuralizerLogic

    return NeuralizerLogic(mini.scene, temp_root=folder / "work", context_folder=folder / "sets", **options)


def run_in_new_scene(folder: Path, model, make_params) -> SimpleNamespace:
    """One real background run in its own scene (`make_params(scene, model path)`), waited for; the work folder is
    kept for inspection."""
    mini = MiniSlicer(folder)
    made = scene(mini, folder)
    logic = new_logic(mini, folder, keep_temp=True)
    params = make_params(made, str(model))
    events, done, start = [], [], time.perf_counter()
    runner = logic.start_background(params, events.append, lambda ok, status: done.append((ok, status)))
    state = runner.wait(timeout=TIMEOUT, interval=0.05)
    assert state == "succeeded", runner.full_log()
    out = runner.work_dir / "out"
    return SimpleNamespace(mini=mini, scene=mini.scene, s=made, logic=logic, params=params, runner=runner, out=out,
                           events=events, done=done, seconds=time.perf_counter() - start, last=dict(logic.last),
                           report=json.loads((out / "report.json").read_text(encoding="utf-8")))
