"""The Neuralizer panel's workflow on MRML nodes: a few-shot task defined by context pairs the user picks from the
scene, `toporeg neuralize` in a background process, the result as a segmentation (task "segment") or a scalar
volume (task "image") on the target's exact grid.

`start_background(params, on_progress, on_done)` validates everything a user can get wrong (no pairs, a label value
absent from a context label map, an empty mask, wrong node kinds) before any file is written, passes nodes that are
unchanged since they were read from disk by their file and writes every other node (and segmentations, as label
maps with their segments' label values) to a temporary folder, runs `toporeg neuralize TARGET --context IMAGE
OUTPUT ... --task T --out DIR` through `BackgroundCliLogic` (runner, JSON progress, cancel file, full log), and once
it succeeded `apply_results` loads DIR/prediction.nii.gz onto the target's grid (its IJKToRAS matrix). A cancelled
or failed run adds no node. Named context sets live in the scene and in a user folder (neuralizer_context).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import neuralizer_context as contexts
from . import nodes
from . import topology_display as overlay
from . import uncertainty_display as segdisplay
from .background import BackgroundCliLogic
from .outputs import read_report
from .params import DEVICES
from .runner import CliRunner

TASKS = ("segment", "image")                   # toporeg neuralize --task
PLANES = ("axial", "coronal", "sagittal")      # --plane
DEFAULT_MODEL = "neuralizer_2d"                # the bundled model (Resources/Models)
PROBABILITY_REFERENCE = "TopoReg.NeuralizerProbability"
ATTRIBUTE = "TopoReg.Neuralizer"               # run settings kept on the output node


@dataclass
class NeuralizerParameters:
    """One Neuralizer run. `contextPairs`: (image node, output node) pairs: label maps, segmentations or scalar
    volumes for "segment", scalar volumes for "image"; `labelValue`: the label that defines the mask (None or 0: any
    non-zero); `contextSize`: bootstrapped context size (None or 0: the model card's maximum); `align`: affinely
    register each context image to the target first; `outputNode`: segmentation / volume to update (None: a new one);
    `contextSetName`: names the result; `probabilityVolume`: also load P(mask) (segment task)."""

    targetVolume: Any = None
    contextPairs: tuple = ()
    task: str = "segment"
    labelValue: int | None = None
    plane: str = "axial"
    contextSize: int | None = None
    model: str = DEFAULT_MODEL
    align: bool = True
    device: str = "auto"
    outputNode: Any = None
    contextSetName: str = ""
    probabilityVolume: bool = False
    opacity: float = 1.0


def as_neuralizer_params(params: Any) -> NeuralizerParameters:
    """A `NeuralizerParameters` copy of any object with (some of) those attributes; 0 means None for the counts."""
    values = {f.name: getattr(params, f.name) for f in fields(NeuralizerParameters) if hasattr(params, f.name)}
    copy = NeuralizerParameters(**values)
    copy.contextPairs = tuple((image, output) for image, output in copy.contextPairs)
    copy.labelValue = int(copy.labelValue) if copy.labelValue else None
    copy.contextSize = int(copy.contextSize) if copy.contextSize else None
    return copy


def _is_model_file(model: str) -> bool:
    return model.endswith(".safetensors") or "/" in model or "\\" in model


def _ndim(node) -> int:
    return 2 if node.GetImageData().GetDimensions()[2] == 1 else 3


class NeuralizerLogic(BackgroundCliLogic):
    """Neuralizer runs and context sets on MRML nodes (injected scene, launcher, temporary root: see the base);
    `context_folder`: where named sets are saved as JSON (default: `neuralizer_context.default_folder()`)."""

    busy_message = "a Neuralizer run is already going"
    temp_prefix = "TopoRegNeuralizer-"

    def __init__(self, scene, *, context_folder: str | Path | None = None, **options):
        super().__init__(scene, **options)
        self.context_folder = Path(context_folder) if context_folder else contexts.default_folder()

    # --- inputs ------------------------------------------------------------------------------
    def check_pair(self, image, output, task: str = "segment", label_value: int | None = None, where: str = "") -> None:
        """Raise `InputError` when (image, output) cannot be a context pair of `task` (the panel's "Add pair")."""
        contexts.check_pair(self.scene, image, output, task, label_value, where)

    def validate(self, params) -> None:
        """Raise `InputError` with a one-line message when `params` cannot be run."""
        p = as_neuralizer_params(params)
        target = p.targetVolume
        if target is None:
            raise nodes.input_error("select a target volume")
        contexts.check_image(target, "target")
        for name, value, choices in (("task", p.task, TASKS), ("plane", p.plane, PLANES),
                                     ("device", p.device, DEVICES)):
            if value not in choices:
                raise nodes.input_error(f"unknown {name} '{value}' (choose from {', '.join(choices)})")
        if not p.contextPairs:
            raise nodes.input_error("add at least one context pair (an image and its label map, segmentation or "
                                    "output volume)")
        for label, value in (("label value", p.labelValue), ("context size", p.contextSize)):
            if value is not None and value < 1:
                raise nodes.input_error(f"{label} must be a positive number (0: automatic)")
        model = (p.model or "").strip()
        if not model:
            raise nodes.input_error(f"choose a model ({DEFAULT_MODEL} or a .safetensors file)")
        if _is_model_file(model) and not Path(model).is_file():
            raise nodes.input_error(f"model file not found: {model}")
        used = {target}
        for index, (image, output) in enumerate(p.contextPairs, 1):
            self.check_pair(image, output, p.task, p.labelValue, f"context pair {index}")
            if _ndim(image) != _ndim(target):
                raise nodes.input_error(f"context pair {index}: image '{image.GetName()}' is {_ndim(image)}D but the "
                                        f"target is {_ndim(target)}D")
            used |= {image, output}
        out = p.outputNode
        if out is not None:
            wanted = contexts.SEGMENTATION_CLASS if p.task == "segment" else nodes.SCALAR_CLASS
            if out in used or not out.IsA(wanted) or nodes.is_labelmap(out):
                raise nodes.input_error(f"the output of task '{p.task}' must be a new "
                                        f"{'segmentation' if p.task == 'segment' else 'volume'}, not an input")

    def write_inputs(self, params: NeuralizerParameters, work_dir: Path) -> list[str]:
        """TARGET --context IMAGE OUTPUT ...: unchanged nodes by their own file, the others written to `work_dir`."""
        from toporeg.io import save_volume

        target = params.targetVolume
        path = contexts.node_file(target) or save_volume(nodes.volume_from_node(target, is_label=False),
                                                         work_dir / "target.nii.gz")
        self.input_names = {str(path): f"target '{target.GetName()}'"}
        args = [str(path)]
        for image, output in contexts.pair_files(params.contextPairs, work_dir, params.task, self.input_names):
            args += ["--context", str(image), str(output)]
        return args

    def cli_arguments(self, params: NeuralizerParameters, input_args: list[str], out_dir: Path) -> list[str]:
        args = ["neuralize", *input_args, "--task", params.task, "--out", str(out_dir), "--plane", params.plane,
                "--model", params.model.strip(), "--device", params.device]
        if params.task == "segment" and params.labelValue:
            args += ["--label-value", str(params.labelValue)]
        if params.contextSize:
            args += ["--context-size", str(params.contextSize)]
        return args + ([] if params.align else ["--no-align"])

    # --- background --------------------------------------------------------------------------
    def start_background(self, params, on_progress: Callable | None = None,
                         on_done: Callable[[bool, str], None] | None = None, work_dir: str | Path | None = None
                         ) -> CliRunner:
        """Start `toporeg neuralize`; poll the returned runner until `poll()` is False (as the other panels).
        Bad input raises here, before any file is written or process started; `on_done(ok, status)` once."""
        return self._start_snapshot_run(as_neuralizer_params(params), self.write_inputs, on_progress, on_done,
                                        work_dir)

    # --- results -----------------------------------------------------------------------------
    def apply_results(self, params: NeuralizerParameters, out_dir: str | Path) -> str:
        """Load a `toporeg neuralize --out DIR` folder onto the target's grid (nodes are made only here)."""
        from toporeg.io import load_volume

        (out, report), target = read_report(out_dir), params.targetVolume
        files, segment = report.get("files", {}), params.task == "segment"

        def load(key: str, default: str, label: bool):
            volume = load_volume(out / files.get(key, default), is_label=label)
            return nodes.snap_to_grid(volume, target, f"Neuralizer {key}")

        prediction = load("prediction", "prediction.nii.gz", segment)  # read and checked before any node is made
        probability = None
        if segment and params.probabilityVolume:
            probability = load("probability", "probability.nii.gz", False).astype(np.float32)
        if segment:
            mask = prediction.with_data((np.asarray(prediction.data) > 0).astype(np.uint8), is_label=True)
            node = self._segmentation(params, mask)
        else:
            node = nodes.ensure_volume_node(self.scene, params.outputNode, f"{target.GetName()} Neuralizer output",
                                            prediction.astype(np.float32))
            overlay.show_overlay(self.scene, target, node, params.opacity)
        node.SetAndObserveTransformNodeID(target.GetTransformNodeID())  # outputs follow the target
        for key, value in (("task", params.task), ("plane", params.plane), ("contextSet", params.contextSetName),
                           ("contextPairs", len(params.contextPairs))):
            node.SetAttribute(f"{ATTRIBUTE}.{key}", str(value))
        made = self._probability(params, node, probability)
        seconds, count = float(report.get("timings", {}).get("total_seconds", 0.0)), len(params.contextPairs)
        status = (f"Neuralizer done in {seconds:.1f} s ({params.task}, {params.plane}, {count} context "
                  f"pair{'s' if count != 1 else ''}): {_measure(prediction, target, segment)}")
        for message in dict.fromkeys([*report.get("warnings", []), *report.get("messages", [])]):
            status += f"; {message}"
        self.last.update(output=node, probability=made, report=report, status=status)
        return status

    def _segmentation(self, params: NeuralizerParameters, mask):
        """The segment task's result: one segment, named after the label it was taught, on the target's grid."""
        target = params.targetVolume
        seg = params.outputNode or segdisplay.new_segmentation_node(
            self.scene, f"{target.GetName()} Neuralizer segmentation", target)
        if seg.GetDisplayNode() is None:
            seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(target)
        ids = segdisplay.define_segments(seg, {0: "background", 1: segment_name(params)})
        segdisplay.remove_other_segments(seg, ids)
        segdisplay.fill_segments(self.scene, seg, mask, ids)
        seg.GetDisplayNode().SetVisibility(True)
        for composite in contexts.scene_nodes(self.scene, "vtkMRMLSliceCompositeNode"):
            composite.SetBackgroundVolumeID(target.GetID())  # the mask is drawn over its own target
        return seg

    def _probability(self, params: NeuralizerParameters, output, probability):
        """P(mask) as a 0-1 volume referenced from the segmentation; an earlier one is updated or removed."""
        old = output.GetNodeReference(PROBABILITY_REFERENCE)
        if probability is None:
            if old is not None:
                output.RemoveNodeReferenceIDs(PROBABILITY_REFERENCE)
                self.scene.RemoveNode(old)
            return None
        node = nodes.ensure_volume_node(self.scene, old, f"{params.targetVolume.GetName()} Neuralizer probability",
                                        probability)
        node.SetAttribute("TopoReg.Units", "probability (0-1) of the mask")
        overlay.style_map(self.scene, node, 0.0, 1.0)
        node.SetAndObserveTransformNodeID(params.targetVolume.GetTransformNodeID())
        output.SetNodeReferenceID(PROBABILITY_REFERENCE, node.GetID())
        return node

    # --- context sets ------------------------------------------------------------------------
    def selection(self, params, name: str = "") -> contexts.ContextSelection:
        p = as_neuralizer_params(params)
        return contexts.ContextSelection(name or p.contextSetName, list(p.contextPairs), p.task, p.labelValue,
                                         p.plane, p.contextSize)

    def save_context_set(self, params, name: str, *, to_folder: bool = True) -> Path | None:
        """Save the pairs and task settings of `params` as set `name` in the scene and (default) as
        `<context_folder>/<name>.json`; returns that file (None when only the scene got it)."""
        selection = self.selection(params, name.strip())
        contexts.file_stem(selection.name)  # a usable name, before anything is written
        if not selection.pairs:
            raise nodes.input_error("the context set is empty: add at least one pair")
        for index, (image, output) in enumerate(selection.pairs, 1):
            self.check_pair(image, output, selection.task, None, f"context pair {index}")
        contexts.write_scene_set(self.scene, selection)
        if not to_folder:
            return None
        self.context_folder.mkdir(parents=True, exist_ok=True)
        return contexts.export_json(selection, self.context_folder / f"{contexts.file_stem(selection.name)}.json")

    def context_set_names(self) -> list[str]:
        """Sets of the scene, then those of the user folder that the scene does not have (sorted)."""
        names = [node.GetName() for node in contexts.scene_set_nodes(self.scene)]
        saved = sorted(p.name[:-5] for p in self.context_folder.glob("*.json")) if self.context_folder.is_dir() else []
        return names + [name for name in saved if name not in names]

    def load_context_set(self, name: str) -> contexts.ContextSelection:
        """The scene's set `name`, else `<context_folder>/<name>.json` (its files loaded as nodes)."""
        node = contexts.find_scene_set(self.scene, name)
        if node is not None:
            return contexts.read_scene_set(node)
        path = self.context_folder / f"{contexts.file_stem(name)}.json"
        if not path.is_file():
            raise nodes.input_error(f"no context set named '{name}' in the scene or in {self.context_folder}")
        return self.import_context_set(path)

    def export_context_set(self, params, path: str | Path, name: str = "") -> Path:
        """JSON for sharing (nodes not on disk are written next to it)."""
        return contexts.export_json(self.selection(params, name), path)

    def import_context_set(self, path: str | Path) -> contexts.ContextSelection:
        return contexts.import_json(self.scene, path)


def segment_name(params: NeuralizerParameters) -> str:
    """The taught label's name: the context segmentation's segment with that label value, else the set's name."""
    for _, output in params.contextPairs:
        if output.IsA(contexts.SEGMENTATION_CLASS):
            segmentation = output.GetSegmentation()
            found = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
            found = [s for s in found if params.labelValue in (None, s.GetLabelValue())]
            if len(found) == 1:
                return found[0].GetName()
    if params.contextSetName:
        return params.contextSetName
    return f"Label {params.labelValue}" if params.labelValue else "Mask"


def _measure(prediction, target, segment: bool) -> str:
    """For the status line: the mask's size (mL; mm² for a one-slice target) or the output's value range."""
    data = np.asarray(prediction.data, np.float64)
    if not segment:
        return f"output range {data.min():.3g} to {data.max():.3g}"
    spacing = np.linalg.norm(nodes.ijk_to_ras(target)[:3, :3], axis=0)
    if target.GetImageData().GetDimensions()[2] == 1:
        return f"mask {(data > 0).sum() * spacing[0] * spacing[1]:.0f} mm²"
    return f"mask {(data > 0).sum() * np.prod(spacing) / 1000:.1f} mL"
