"""The uncertainty panel's workflow on MRML nodes: `toporeg segment` in a background process, results as a
segmentation with standard terminology, an entropy overlay and sampled masks to cycle through.

`start_background(params, on_progress, on_done)` validates the parameters, writes the input volume (without its
parent transform) to a temporary folder, runs `toporeg segment INPUT --out DIR --model ... --samples N
--save-samples K` through `BackgroundCliLogic` (the runner, cancel file, full log and conclusion the topology
panel uses) and, once it succeeded, `apply_results` loads DIR onto the input's exact grid (its IJKToRAS matrix):
- a vtkMRMLSegmentationNode, one segment per foreground label with SNOMED-CT terminology (uncertainty_display);
- the entropy map (bits, log2) as the foreground of every slice view: perceptual colour map, window fixed to
  0..log2(C) bits so one colour means the same uncertainty in every run, values below `threshold` transparent,
  units and legend as node attributes (topology_display, shared with the heatmap);
- the K sampled masks in a second segmentation node, shown one at a time by `show_sample` / `next_sample`;
- optionally one probability volume (0-1) per foreground class.
A cancelled or failed run adds no node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import nodes
from . import topology_display as overlay
from . import uncertainty_display as segdisplay
from .background import BackgroundCliLogic
from .outputs import read_report
from .params import DEVICES
from .runner import CliRunner

METHODS = ("unet", "ensemble", "mcdropout", "probunet")   # toporeg.cli.segment_cmd.METHODS
TASKS = ("brain", "tissue")                                 # toporeg.cli.segment_cmd.TASKS
MAX_SAMPLE_MASKS = 16      # sampled masks loaded for "next sample" (all of the default 16 samples)
REFERENCES = {"entropy": "TopoReg.Entropy", "samples": "TopoReg.SampleMasks", "probability": "TopoReg.Probability"}
ENTROPY_UNITS = "bits per voxel (entropy, log2, of the mean class probabilities)"
PROBABILITY_UNITS = "probability (0-1) of the class, mean over the samples"


@dataclass
class UncertaintyParameters:
    """One segmentation with uncertainty. `model`: an uncertainty method (unet / ensemble / mcdropout / probunet:
    the bundled `seg_{task}_{method}`), an installed model name or a .safetensors path (its card decides the task);
    `samples`: Monte-Carlo samples averaged; `segmentation`: output node to update (None: a new one); `threshold`:
    entropy (bits) below which the overlay is transparent; `probabilityVolumes`: also load P(class) volumes."""

    inputVolume: Any = None
    model: str = "unet"
    task: str = "tissue"
    samples: int = 16
    device: str = "auto"
    probabilityVolumes: bool = False
    segmentation: Any = None
    opacity: float = 0.5
    threshold: float = 0.1


def as_uncertainty_params(params: Any) -> UncertaintyParameters:
    """An `UncertaintyParameters` copy of any object with (some of) those attributes (later edits do not leak in)."""
    return UncertaintyParameters(**{f.name: getattr(params, f.name) for f in fields(UncertaintyParameters)
                                    if hasattr(params, f.name)})


def is_model_file(model: str) -> bool:
    text = model.strip()
    return text.endswith(".safetensors") or "/" in text or "\\" in text


class UncertaintyLogic(BackgroundCliLogic):
    """Segmentation with uncertainty on MRML nodes (injected scene, launcher, temporary root: see the base)."""

    busy_message = "a segmentation is already running"
    temp_prefix = "TopoRegUncertainty-"

    # --- inputs ------------------------------------------------------------------------------
    def validate(self, params) -> None:
        """Raise `InputError` with a one-line message when `params` cannot be run."""
        p = as_uncertainty_params(params)
        node = p.inputVolume
        if node is None:
            raise nodes.input_error("select an input volume")
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise nodes.input_error("the input must be a scalar volume")
        if node.GetImageData() is None:
            raise nodes.input_error(f"input volume '{node.GetName()}' has no image data")
        if node.GetImageData().GetNumberOfScalarComponents() != 1:
            raise nodes.input_error(f"input volume '{node.GetName()}' must have a single component")
        model = (p.model or "").strip()
        if not model:
            raise nodes.input_error("choose a model: unet, ensemble, mcdropout, probunet or a model file")
        if is_model_file(model) and not Path(model).is_file():
            raise nodes.input_error(f"model file not found: {model}")
        for name, value, choices in (("task", p.task, TASKS), ("device", p.device, DEVICES)):
            if value not in choices:
                raise nodes.input_error(f"unknown {name} '{value}' (choose from {', '.join(choices)})")
        if int(p.samples) < 1:
            raise nodes.input_error("samples must be at least 1")

    def cli_arguments(self, params: UncertaintyParameters, image: str, out_dir: Path) -> list[str]:
        model = params.model.strip()
        samples = int(params.samples)
        args = ["segment", image, "--out", str(out_dir), "--model", model]
        if model in METHODS:  # a bundled model is picked by task; a named or file model's card says its task
            args += ["--task", params.task]
        return args + ["--samples", str(samples), "--save-samples", str(min(samples, MAX_SAMPLE_MASKS)),
                       "--device", params.device]

    def write_input(self, params: UncertaintyParameters, work_dir: Path) -> str:
        from toporeg.io import save_volume

        node = params.inputVolume
        path = str(save_volume(nodes.volume_from_node(node, is_label=False), work_dir / "input.nii"))
        self.input_names = {path: f"input volume '{node.GetName()}'"}
        return path

    # --- background --------------------------------------------------------------------------
    def start_background(self, params, on_progress: Callable | None = None,
                         on_done: Callable[[bool, str], None] | None = None, work_dir: str | Path | None = None
                         ) -> CliRunner:
        """Start `toporeg segment`; poll the returned runner until `poll()` is False (as the other panels).

        `on_done(ok, status)` once, after the results were added to the scene (ok) or the run failed / was
        cancelled (nothing added). Bad input raises here, before any file is written or process started.
        """
        return self._start_snapshot_run(as_uncertainty_params(params), self.write_input, on_progress, on_done,
                                        work_dir)

    # --- results -----------------------------------------------------------------------------
    def apply_results(self, params: UncertaintyParameters, out_dir: str | Path) -> str:
        """Load a `toporeg segment --out DIR` folder into the scene (nodes are created only here); status line."""
        from toporeg.io import load_volume

        (out, report), source = read_report(out_dir), params.inputVolume
        files, metrics = report["files"], report.get("metrics", {})
        labels = {int(k): str(v) for k, v in report["model"]["labels"].items()}

        def load(key: str, is_label: bool):
            return nodes.snap_to_grid(load_volume(out / files[key], is_label=is_label), source, f"output {key}")

        # every file is read and checked before the first node is made: a bad output adds nothing
        label_map, entropy_map = load("labels", True), load("entropy", False).astype(np.float32)
        sample_maps = [load(key, True) for key in sorted(files) if key.startswith("sample_")]
        probability_maps = load("probabilities", False) if params.probabilityVolumes else None
        seg = params.segmentation or segdisplay.new_segmentation_node(
            self.scene, f"{source.GetName()} segmentation ({report.get('method', params.model)})", source)
        if seg.GetDisplayNode() is None:
            seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
        ids = segdisplay.define_segments(seg, labels)
        segdisplay.remove_other_segments(seg, ids)
        segdisplay.fill_segments(self.scene, seg, label_map, ids)
        entropy = self._entropy_overlay(params, seg, entropy_map, len(labels))
        samples = self._sample_masks(source, seg, labels, sample_maps)
        probabilities = self._probability_volumes(params, seg, probability_maps, labels)
        for node in (seg, entropy, samples, *probabilities):
            node.SetAndObserveTransformNodeID(source.GetTransformNodeID())  # outputs follow the input volume
        segdisplay.show_sample(seg, samples, None)
        status = self._status(report, metrics, labels)
        self.last.update(segmentation=seg, entropy=entropy, samples=samples, probabilities=probabilities,
                         legend=self._legend(len(labels)), report=report, status=status)
        return status

    @staticmethod
    def _legend(n_classes: int) -> dict[str, float]:
        """Display position (0-1 of the colour bar) -> bits; the window is 0..log2(C) bits."""
        top = math.log2(n_classes)
        return {key: top * float(key) for key in ("0", "0.25", "0.5", "0.75", "1")}

    def _entropy_overlay(self, params: UncertaintyParameters, seg, volume, n_classes: int):
        node = nodes.ensure_volume_node(self.scene, seg.GetNodeReference(REFERENCES["entropy"]),
                                        f"{params.inputVolume.GetName()} uncertainty (entropy)", volume)
        seg.SetNodeReferenceID(REFERENCES["entropy"], node.GetID())
        overlay.set_legend(node, self._legend(n_classes), ENTROPY_UNITS, unit="bits")
        overlay.style_map(self.scene, node, 0.0, math.log2(n_classes), params.threshold)
        overlay.show_overlay(self.scene, params.inputVolume, node, params.opacity)
        overlay.add_color_legend(node, "Uncertainty (entropy), bits per voxel")
        return node

    def _sample_masks(self, source, seg, labels: dict[int, str], samples: list):
        """All sampled masks in one segmentation node (hidden until `show_sample`)."""
        node = seg.GetNodeReference(REFERENCES["samples"])
        if node is None:
            node = segdisplay.new_segmentation_node(self.scene, f"{seg.GetName()} sampled masks", source)
            seg.SetNodeReferenceID(REFERENCES["samples"], node.GetID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(source)
        keep = []
        for index, volume in enumerate(samples):
            ids = segdisplay.define_segments(node, labels, sample=index)
            segdisplay.fill_segments(self.scene, node, volume, ids)
            keep += ids
        segdisplay.remove_other_segments(node, keep)
        node.SetAttribute(segdisplay.SAMPLE_COUNT, str(len(samples)))
        return node

    def _probability_volumes(self, params: UncertaintyParameters, seg, volume, labels: dict[int, str]) -> list:
        """One P(class) volume per foreground class when asked; earlier ones are removed either way."""
        role = REFERENCES["probability"]
        for index in reversed(range(seg.GetNumberOfNodeReferences(role))):
            old = seg.GetNthNodeReference(role, index)
            seg.RemoveNthNodeReferenceID(role, index)
            if old is not None:
                self.scene.RemoveNode(old)
        made = []
        for value in range(1, len(labels)) if volume is not None else ():
            channel = volume.with_data(np.ascontiguousarray(volume.data[..., value], np.float32), has_channels=False)
            node = nodes.new_volume_node(self.scene, channel, f"{params.inputVolume.GetName()} "
                                         f"P({segdisplay.display_name(labels[value])})")
            node.SetAttribute("TopoReg.Units", PROBABILITY_UNITS)
            overlay.style_map(self.scene, node, 0.0, 1.0)
            seg.AddNodeReferenceID(role, node.GetID())
            made.append(node)
        return made

    @staticmethod
    def _status(report: dict, metrics: dict, labels: dict[int, str]) -> str:
        seconds = float(report.get("timings", {}).get("total_seconds", 0.0))
        settings = report.get("segmentation_settings", {})
        parts = []
        for value, item in sorted(metrics.get("labels", {}).items(), key=lambda kv: int(kv[0])):
            size = (f"{item['volume_ml']:.1f} mL" if "volume_ml" in item else f"{item.get('area_mm2', 0.0):.0f} mm²")
            parts.append(f"{segdisplay.display_name(labels.get(int(value), str(value)))} {size}")
        status = (f"Segmentation done in {seconds:.1f} s ({report.get('method', '?')}, {settings.get('samples', '?')}"
                  f" samples): mean uncertainty {metrics.get('mean_entropy_bits', 0.0):.3g} of "
                  f"{math.log2(len(labels)):.3g} bits, sample diversity {metrics.get('sample_diversity', 0.0):.3g}")
        status += "; " + ", ".join(parts) if parts else ""
        for message in report.get("messages", []):
            status += f"; {message}"
        return status

    # --- sampled masks -----------------------------------------------------------------------
    def _segmentations(self, segmentation=None):
        """(mean segmentation, its sampled-masks node, number of samples) of `segmentation` or the last run."""
        seg = segmentation or self.last.get("segmentation")
        if seg is None:
            raise nodes.input_error("no segmentation with sampled masks yet: run a segmentation first")
        samples = seg.GetNodeReference(REFERENCES["samples"])
        return seg, samples, int((samples.GetAttribute(segdisplay.SAMPLE_COUNT) if samples else None) or 0)

    def show_sample(self, index: int | None, segmentation=None) -> str:
        """Show sampled mask `index` (wrapping around) in place of the mean segmentation, or the mean (None);
        returns the line for the panel."""
        seg, samples, count = self._segmentations(segmentation)
        shown = segdisplay.show_sample(seg, samples, index)
        return "Showing the mean segmentation" if shown is None else f"Showing sampled mask {shown + 1} of {count}"

    def next_sample(self, segmentation=None) -> str:
        """The "next sample" button: mean -> sample 1 -> ... -> sample K -> mean."""
        seg, samples, count = self._segmentations(segmentation)
        current = segdisplay.shown_sample(samples)
        following = 0 if current is None else current + 1
        return self.show_sample(following if following < count else None, seg)

    def set_opacity(self, opacity: float) -> None:
        overlay.set_opacity(self.scene, opacity)
