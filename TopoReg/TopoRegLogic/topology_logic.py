"""The topology heatmap workflow on MRML nodes: `toporeg topology` in a background process, results as overlays.

`start_background(params, on_progress, on_done)` validates the nodes, writes them (and the control volumes) to a
temporary folder, runs `toporeg topology FIXED MOVING --out DIR ...` through the same `CliRunner` as the
registration (JSON progress, cancel file, full log) and, once it succeeded, `apply_results` loads DIR into the
scene: the heatmap L_sym(FIXED|MOVING) in nats per voxel and its 0-1 display map on the fixed grid (exact
geometry: the fixed node's IJKToRAS), the outlier map Q(FIXED) when controls were given, and the initial
registration (transform with reference roles, warped volume) through `RegistrationLogic.apply_results`. The
display map becomes the foreground of every slice view (perceptual colour map, window fixed to 0-1, opacity), its
legend (display value -> nats, from report.json) is stored as node attributes `TopoReg.legend.<value>`.
A cancelled or failed run adds no node. Inputs are read without their parent transforms (the CLI registers them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import nodes
from . import topology_display as overlay
from .background import BackgroundCliLogic
from .outputs import outputs_from_directory, read_report
from .params import DEVICES, PRESETS, TOPOLOGY_FEATURES, TOPOLOGY_METHODS, RegistrationParams
from .registration_logic import RegistrationLogic
from .runner import CliRunner, popen_launcher

FEATURES = TOPOLOGY_FEATURES                # TOPOLOGY_METHODS / _FEATURES: params.py (the parameter node's choices)
REFERENCES = {"display": "TopoReg.HeatmapDisplay", "outlier": "TopoReg.Outlier",
              "transform": "TopoReg.Transform", "warped": "TopoReg.Warped",
              "segmentation": "TopoReg.ThresholdSegmentation"}
UNITS = {"heatmap": "nats per voxel (L_sym)", "display": "0-1 display map of the heatmap",
         "outlier": "nats per voxel (outlier score Q against the controls)"}


@dataclass
class TopologyParameters:
    """One heatmap computation. `controls`: volume nodes (the control set, exported as NIfTI); `model`: a topology
    model name or .safetensors path (method 'learned' only); `iterations`: ELBO fit iterations (None: the CLI's
    default); `heatmapVolume`: output node to update (None: a new one); `threshold`: display values below it are
    transparent in the overlay. fixed = the image examined (J), moving = the reference (I)."""

    fixedVolume: Any = None
    movingVolume: Any = None
    fixedMask: Any = None
    movingMask: Any = None
    method: str = "optimize"
    features: str = "intensity"
    model: str = ""
    controls: tuple = ()
    preset: str = "default"
    iterations: int | None = None
    device: str = "auto"
    heatmapVolume: Any = None
    opacity: float = 0.5
    threshold: float = 0.25


def as_topology_params(params: Any) -> TopologyParameters:
    """A `TopologyParameters` copy of any object with (some of) those attributes (later edits do not leak in)."""
    values = {f.name: getattr(params, f.name) for f in fields(TopologyParameters) if hasattr(params, f.name)}
    return TopologyParameters(**{**values, "controls": tuple(values.get("controls") or ())})


def _spatial_ndim(node) -> int:
    return 2 if node.GetImageData().GetDimensions()[2] == 1 else 3


class TopologyLogic(BackgroundCliLogic):
    """Topology heatmaps on MRML nodes. Same injected dependencies as `RegistrationLogic`."""

    busy_message = "a heatmap computation is already running"
    temp_prefix = "TopoRegTopology-"
    model_task = "topology"

    def __init__(self, scene, *, volumes_logic=None, segmentations_logic=None, launcher: Callable = popen_launcher,
                 python: str | None = None, temp_root: str | Path | None = None, keep_temp: bool = False):
        super().__init__(scene, launcher=launcher, python=python, temp_root=temp_root, keep_temp=keep_temp)
        # writes the input files and applies the initial registration's outputs (its own `last`, not the panel's)
        self.registration = RegistrationLogic(scene, volumes_logic=volumes_logic,
                                              segmentations_logic=segmentations_logic, temp_root=temp_root)

    # --- inputs ------------------------------------------------------------------------------
    def validate(self, params) -> None:
        """Raise `InputError` with a one-line message when `params` cannot be run."""
        p = as_topology_params(params)
        fixed, moving = p.fixedVolume, p.movingVolume
        if fixed is None or moving is None:
            raise nodes.input_error("select a fixed and a moving volume")
        if fixed is moving:
            raise nodes.input_error("fixed and moving volumes must be different")
        for name, value, choices in (("method", p.method, TOPOLOGY_METHODS), ("features", p.features, FEATURES),
                                     ("preset", p.preset, PRESETS), ("device", p.device, DEVICES)):
            if value not in choices:
                raise nodes.input_error(f"unknown {name} '{value}' (choose from {', '.join(choices)})")
        if p.method == "learned" and not (p.model or "").strip():
            raise nodes.input_error("method 'learned' needs a trained topology model (a name or a .safetensors path)")
        if p.iterations is not None and int(p.iterations) < 0:
            raise nodes.input_error("iterations must be >= 0")
        if p.heatmapVolume is not None and (p.heatmapVolume in (fixed, moving) or p.heatmapVolume in p.controls):
            raise nodes.input_error("the heatmap volume must be a new volume, not an input")
        for role, node in (("fixed", fixed), ("moving", moving)) + tuple(("control", c) for c in p.controls):
            if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
                raise nodes.input_error(f"the {role} image must be a scalar volume")
            if node.GetImageData() is None:
                raise nodes.input_error(f"{role} volume '{node.GetName()}' has no image data")
            if node.GetImageData().GetNumberOfScalarComponents() != 1:
                raise nodes.input_error(f"{role} volume '{node.GetName()}' must have a single component")
            if _spatial_ndim(node) != _spatial_ndim(fixed):
                raise nodes.input_error(f"{role} volume '{node.GetName()}' is {_spatial_ndim(node)}D but fixed volume "
                                        f"'{fixed.GetName()}' is {_spatial_ndim(fixed)}D: use images of one kind")
        if fixed in p.controls:
            raise nodes.input_error("the fixed volume cannot be one of its own controls")
        if len(p.controls) == 1:  # the outlier score compares each control with the others (leave-one-out)
            raise nodes.input_error("a control set needs at least two volumes")

    def write_inputs(self, params: TopologyParameters, work_dir: Path) -> list[str]:
        """Save fixed, moving, masks (through `RegistrationLogic.write_inputs`) and the controls; CLI arguments."""
        from toporeg.io import save_volume

        fixed_node = params.fixedVolume
        inputs = {"fixed": nodes.volume_from_node(fixed_node, is_label=False),
                  "moving": nodes.volume_from_node(params.movingVolume, is_label=False),
                  "fixed_mask": nodes.mask_from_node(params.fixedMask, fixed_node,
                                                     self.registration.segmentations_logic),
                  "moving_mask": nodes.mask_from_node(params.movingMask, params.movingVolume,
                                                      self.registration.segmentations_logic),
                  "initial": None}
        args = self.registration.write_inputs(inputs, work_dir)
        self.input_names = self.registration.input_names  # one dict: the controls' names are added to it
        controls = []
        for index, node in enumerate(params.controls):
            path = str(save_volume(nodes.volume_from_node(node, is_label=False), work_dir / f"control_{index}.nii"))
            self.input_names[path] = f"control '{node.GetName()}'"
            controls.append(path)
        return args + (["--controls", *controls] if controls else [])

    def cli_arguments(self, params: TopologyParameters, input_args: list[str], out_dir: Path) -> list[str]:
        args = ["topology", *input_args[:2], "--out", str(out_dir), "--method", params.method,
                "--features", params.features, "--preset", params.preset, "--device", params.device]
        if params.method == "learned":
            args += ["--model", params.model.strip()]
        if params.iterations is not None:
            args += ["--iterations", str(int(params.iterations))]
        return args + input_args[2:]

    # --- background --------------------------------------------------------------------------
    def start_background(self, params, on_progress: Callable | None = None,
                         on_done: Callable[[bool, str], None] | None = None, work_dir: str | Path | None = None
                         ) -> CliRunner:
        """Start `toporeg topology`; poll the returned runner until `poll()` is False (as the registration).

        `on_done(ok, status)` once, after the results were added to the scene (ok) or the run failed / was
        cancelled (nothing added). Bad input raises here, before any file is written or process started.
        """
        return self._start_snapshot_run(as_topology_params(params), self.write_inputs, on_progress, on_done, work_dir)

    # --- results -----------------------------------------------------------------------------
    def apply_results(self, params: TopologyParameters, out_dir: str | Path) -> str:
        """Load a `toporeg topology --out DIR` folder into the scene (nodes are created only here); status line."""
        from toporeg.io import load_volume

        (out, report), fixed = read_report(out_dir), params.fixedVolume
        files, metrics = report.get("files", {}), report.get("metrics", {})
        legend = {str(k): float(v) for k, v in metrics.get("display_legend", {}).items()}
        volumes = {role: nodes.snap_to_grid(load_volume(out / files[key], is_label=False), fixed,
                                            "topology output").astype(np.float32)
                   for role, key in (("heatmap", "heatmap"), ("display", "heatmap_display"), ("outlier", "outlier"))
                   if key in files}
        heatmap = nodes.ensure_volume_node(self.scene, params.heatmapVolume,
                                           f"{fixed.GetName()} topology heatmap", volumes["heatmap"])
        made = {"heatmap": heatmap}
        for role, title in (("display", "topology display"), ("outlier", "outlier score")):
            old = heatmap.GetNodeReference(REFERENCES[role])
            if role in volumes:
                made[role] = nodes.ensure_volume_node(self.scene, old, f"{fixed.GetName()} {title}", volumes[role])
                heatmap.SetNodeReferenceID(REFERENCES[role], made[role].GetID())
            elif old is not None:  # a previous run had controls, this one has none
                heatmap.RemoveNodeReferenceIDs(REFERENCES[role])
                self.scene.RemoveNode(old)
        for role, node in made.items():
            node.SetAndObserveTransformNodeID(fixed.GetTransformNodeID())  # overlays follow the fixed volume
            overlay.set_legend(node, {} if role == "outlier" else legend, UNITS[role])
        lo, hi = legend.get("0", 0.0), legend.get("1", 1.0)
        overlay.style_map(self.scene, made["heatmap"], lo, max(hi, lo + 1e-3))
        overlay.style_map(self.scene, made["display"], 0.0, 1.0, params.threshold)
        if "outlier" in made:
            q = np.asarray(volumes["outlier"].data, np.float64)
            overlay.style_map(self.scene, made["outlier"], float(np.median(q)), float(np.percentile(q, 99)) + 1e-3)
        overlay.show_overlay(self.scene, fixed, made["display"], params.opacity)
        overlay.add_color_legend(made["display"], f"Topological change, log scale: 0 = {lo:.3g}, 1 = {hi:.3g} nats/voxel")
        registration_status = self._apply_registration(params, out, report, heatmap)
        nats = metrics.get("heatmap_nats", {})
        status = (f"Heatmap done in {float(report.get('timings', {}).get('total_seconds', 0.0)):.1f} s: L_sym median "
                  f"{nats.get('median', 0.0):.3g}, 99th percentile {nats.get('p99', 0.0):.3g} nats per voxel")
        if "outlier" in made:
            status += f"; outlier score against {len(params.controls)} controls"
        status += f"; registration {registration_status.split(': ', 1)[-1]}"
        for message in report.get("messages", []):  # input-domain warnings (toporeg.topology.pipeline.domain_messages)
            status += f"; {message}"
        self.last.update(made, legend=legend, report=report, status=status,
                         transform=self.registration.last.get("transform"),
                         warped=self.registration.last.get("volume"))
        return status

    def _apply_registration(self, params: TopologyParameters, out: Path, report: dict, heatmap) -> str:
        """The initial registration (registration/ has no report.json of its own) through the registration logic."""
        from toporeg.registration import preset

        reg_dir = out / "registration"
        reg_files = {k.split("/", 1)[1]: v.split("/", 1)[1] for k, v in report.get("files", {}).items()
                     if k.startswith("registration/")}
        reg_report = {
            "files": reg_files, "metrics": report.get("metrics", {}).get("registration", {}),
            "registration_settings": {"transform": preset(params.preset).transform},
            "timings": {"total_seconds": report.get("timings", {}).get("topology.registration_seconds", 0.0)}}
        (reg_dir / "report.json").write_text(json.dumps(reg_report), encoding="utf-8")
        fixed, moving = params.fixedVolume, params.movingVolume
        transform = heatmap.GetNodeReference(REFERENCES["transform"])
        warped = heatmap.GetNodeReference(REFERENCES["warped"])
        if warped is None:
            warped = self.scene.AddNewNodeByClass(nodes.SCALAR_CLASS, self.scene.GenerateUniqueName(
                f"{moving.GetName()} registered to {fixed.GetName()} (topology)"))
        run = RegistrationParams(fixedVolume=fixed, movingVolume=moving, outputTransform=transform,
                                 outputVolume=warped, applyToMoving=False, showJacobian=False)
        status = self.registration.apply_results(run, outputs_from_directory(reg_dir))
        if transform is None:
            run.outputTransform.SetName(self.scene.GenerateUniqueName(
                f"{moving.GetName()} to {fixed.GetName()} (TopoReg topology)"))
        heatmap.SetNodeReferenceID(REFERENCES["transform"], run.outputTransform.GetID())
        heatmap.SetNodeReferenceID(REFERENCES["warped"], warped.GetID())
        if warped.GetDisplayNode() is None:
            warped.CreateDefaultDisplayNodes()
        return status

    def set_opacity(self, opacity: float) -> None:
        overlay.set_opacity(self.scene, opacity)

    # --- threshold (the panel's slider and "show as segmentation"; work on a reloaded scene too) -----------------
    def _display_map(self, heatmap):
        heatmap = heatmap if heatmap is not None else self.last.get("heatmap")
        display = heatmap.GetNodeReference(REFERENCES["display"]) if heatmap is not None else None
        if display is None:
            raise nodes.input_error("compute a heatmap first (or select one in 'Heatmap volume')")
        return heatmap, display

    def set_threshold(self, threshold: float, heatmap=None) -> None:
        """Display-map values below `threshold` (0-1) become transparent; nothing to do before the first heatmap."""
        try:
            overlay.set_threshold(self._display_map(heatmap)[1], threshold)
        except ValueError:
            pass

    def show_as_segmentation(self, threshold: float, heatmap=None):
        """The regions at or above `threshold` (display 0-1) as one segment on the fixed grid, named with the nats the
        threshold stands for (from the legend attributes, so a reloaded scene works); (segmentation node, status)."""
        heatmap, display = self._display_map(heatmap)
        legend = {k: float(v.split()[0]) for k, v in overlay.legend_from_node(display).items()}
        nats = overlay.display_to_value(legend, threshold)
        name = f"Topological change (>= {nats:.3g} nats per voxel)" if nats is not None else "Topological change"
        segmentation = overlay.threshold_segmentation(self.scene, display, threshold, display,
                                                      heatmap.GetNodeReference(REFERENCES["segmentation"]), name)
        segmentation.SetAndObserveTransformNodeID(display.GetTransformNodeID())
        heatmap.SetNodeReferenceID(REFERENCES["segmentation"], segmentation.GetID())
        voxels = int((nodes.volume_from_node(display).data >= threshold).sum())
        return segmentation, f"{name}: {voxels} voxels in '{segmentation.GetName()}'"
