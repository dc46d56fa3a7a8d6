"""The registration workflow on MRML nodes, with its dependencies injected (scene, logics, process launcher).

Two ways in, one way out:

- `run_in_process(params, progress_cb)` calls `toporeg.registration.register` in this process (batch
  scripts, tests, `Slicer --no-main-window`); it blocks.
- `start_background(params, on_progress, on_done)` writes the inputs to a temporary folder, runs the
  `toporeg register` CLI in a child process and returns a `CliRunner`; the caller polls it (QTimer).

Both end in `apply_results(params, outputs)`, which creates or updates the MRML nodes and returns the
status line (time, folding %, landmark TRE when paired landmarks are given).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import landmarks, nodes
from . import transform_nodes as tn
from .background import BackgroundCliLogic
from .outputs import RegistrationOutputs, outputs_from_directory, outputs_from_result
from .params import DEVICES, DIO_TRANSFORMS, METHODS, PRESETS, SIMILARITIES, TRANSFORM_MODELS, as_params, get
from .runner import CliRunner, popen_launcher

JACOBIAN_REFERENCE = "TopoReg.Jacobian"


class RegistrationLogic(BackgroundCliLogic):
    """Registration on MRML nodes. `scene` is required; everything else has a working default.

    `volumes_logic` / `segmentations_logic`: the module logics (segmentation masks are exported through
    the latter's static helper when None). `launcher` / `python`: how background runs start the CLI.
    `temp_root`: where background runs write their inputs (Slicer: `slicer.app.temporaryPath`).
    """

    busy_message = "a registration is already running"
    temp_prefix = "TopoReg-"
    model_task = "registration"

    def __init__(self, scene, *, volumes_logic=None, segmentations_logic=None, launcher: Callable = popen_launcher,
                 python: str | None = None, temp_root: str | Path | None = None, keep_temp: bool = False):
        super().__init__(scene, launcher=launcher, python=python, temp_root=temp_root, keep_temp=keep_temp)
        self.volumes_logic = volumes_logic
        self.segmentations_logic = segmentations_logic

    # --- inputs ------------------------------------------------------------------------------
    def validate(self, params) -> None:
        """Raise `InputError` with a one-line message when `params` cannot be run."""
        fixed, moving = get(params, "fixedVolume"), get(params, "movingVolume")
        if fixed is None or moving is None:
            raise nodes.input_error("select a fixed and a moving volume")
        if fixed is moving:
            raise nodes.input_error("fixed and moving volumes must be different")
        output = get(params, "outputVolume")
        if output is not None and output in (fixed, moving):
            raise nodes.input_error("the output volume must be a new volume, not the fixed or moving one")
        method = get(params, "method")
        if method not in METHODS:
            raise nodes.input_error(f"unknown method '{method}'")
        if method == "dio" and get(params, "transformModel") not in DIO_TRANSFORMS:
            raise nodes.input_error(f"the DIO solver has no {get(params, 'transformModel')} transform: choose "
                                    f"{', '.join(DIO_TRANSFORMS)}")
        if get(params, "topologyAware") and method != "optimize":
            raise nodes.input_error(f"topology-aware registration uses the 'optimize' method, not '{method}'")
        for name, choices in (("preset", PRESETS), ("transformModel", TRANSFORM_MODELS),
                              ("similarity", SIMILARITIES), ("device", DEVICES)):
            if get(params, name) not in choices:
                raise nodes.input_error(f"unknown {name} '{get(params, name)}' (choose from {', '.join(choices)})")
        own = get(params, "outputTransform")
        for role, node in (("fixed", fixed), ("moving", moving)):
            parent = node.GetParentTransformNode()
            if parent is not None and parent is not own:
                raise nodes.input_error(f"{role} volume '{node.GetName()}' is under transform '{parent.GetName()}': "
                                        "harden or remove it first, or give it as the initial transform")

    def collect_inputs(self, params) -> dict:
        """Volumes, masks and the initial matrix read from the nodes (parent transforms are not applied)."""
        self.validate(params)
        fixed_node, moving_node = get(params, "fixedVolume"), get(params, "movingVolume")
        fixed = nodes.volume_from_node(fixed_node, is_label=False)
        moving = nodes.volume_from_node(moving_node, is_label=False)
        if fixed.has_channels or moving.has_channels:
            raise nodes.input_error("fixed and moving must be scalar (single-component) volumes")
        initial_node = get(params, "initialTransform")
        return {
            "fixed": fixed, "moving": moving,
            "fixed_mask": nodes.mask_from_node(get(params, "fixedMask"), fixed_node, self.segmentations_logic),
            "moving_mask": nodes.mask_from_node(get(params, "movingMask"), moving_node, self.segmentations_logic),
            "initial": None if initial_node is None else nodes.matrix_from_transform_node(initial_node),
        }

    def settings_for(self, params):
        from toporeg.registration import preset

        override = get(params, "settings")
        if override is not None:
            return override
        return preset(get(params, "preset"), transform=get(params, "transformModel"),
                      similarity=get(params, "similarity"))

    @staticmethod
    def method_options(params):
        """The learned methods' options (`toporeg.methods.MethodOptions`): the chosen model, DIO's transform."""
        from toporeg.methods import MethodOptions

        method, model = get(params, "method"), (get(params, "registrationModel") or "").strip()
        return MethodOptions(model=(model or None) if method != "optimize" else None,
                             dio_transform=get(params, "transformModel") if method == "dio" else None)

    # --- in process --------------------------------------------------------------------------
    def run_in_process(self, params, progress_cb: Callable[[str, float, str], None] | None = None,
                       cancel_token=None) -> str:
        """Register now, in this process; returns the status line (raises on bad input or cancel)."""
        from toporeg.methods import register_with_method
        from toporeg.progress import CancelToken, Progress

        if get(params, "topologyAware"):
            raise nodes.input_error("topology-aware registration runs through the toporeg CLI: use start_background")
        inputs = self.collect_inputs(params)
        progress = Progress(progress_cb, cancel_token or CancelToken())
        start = time.perf_counter()
        result = register_with_method(get(params, "method"), inputs["fixed"], inputs["moving"], self.settings_for(params),
                                      self.method_options(params), fixed_mask=inputs["fixed_mask"],
                                      moving_mask=inputs["moving_mask"], initial_transform=inputs["initial"],
                                      progress=progress, device=get(params, "device"))
        self.last["result"] = result
        return self.apply_results(params, outputs_from_result(result, time.perf_counter() - start))

    # --- background --------------------------------------------------------------------------
    def write_inputs(self, inputs: dict, work_dir: Path) -> list[str]:
        """Save the inputs (atomic writes through the library) and return the CLI arguments naming them.

        `self.input_names` maps each temporary file to what the user calls it, for error messages.
        """
        from toporeg.io import save_volume

        self.input_names = {str(work_dir / f"{key}.nii"): f"{key.replace('_', ' ')} '{inputs[key].meta.get('name', key)}'"
                            for key in ("fixed", "moving", "fixed_mask", "moving_mask") if inputs[key] is not None}

        args = [str(save_volume(inputs["fixed"], work_dir / "fixed.nii")),
                str(save_volume(inputs["moving"], work_dir / "moving.nii"))]
        for key, flag in (("fixed_mask", "--fixed-mask"), ("moving_mask", "--moving-mask")):
            if inputs[key] is not None:
                args += [flag, str(save_volume(inputs[key], work_dir / f"{key}.nii"))]
        if inputs["initial"] is not None:
            np.savetxt(work_dir / "initial.txt", inputs["initial"])
            args += ["--initial-transform", str(work_dir / "initial.txt")]
        return args

    def cli_arguments(self, params, input_args: list[str], out_dir: Path) -> list[str]:
        return ["register", *input_args[:2], "--out", str(out_dir), "--method", get(params, "method"),
                "--preset", get(params, "preset"), "--transform", get(params, "transformModel"),
                "--similarity", get(params, "similarity"), "--device", get(params, "device"), *input_args[2:],
                *(["--topology-aware"] if get(params, "topologyAware") else []),
                *(["--model", model] if (model := self.method_options(params).model) else [])]

    def start_background(self, params, on_progress: Callable | None = None,
                         on_done: Callable[[bool, str], None] | None = None, work_dir: str | Path | None = None
                         ) -> CliRunner:
        """Start the CLI in a child process; poll the returned runner until `poll()` is False.

        `on_progress(ProgressEvent)` for each JSON progress line; `on_done(ok, status)` once, after the
        outputs were applied to the scene (ok=True) or the run failed / was cancelled (ok=False).
        Bad input raises here, before any process starts.
        """
        inputs = self.collect_inputs(params)
        snapshot = as_params(params)  # later GUI edits must not change what this run's results are applied to

        def apply(out_dir: Path) -> str:
            status = self.apply_results(snapshot, outputs_from_directory(out_dir))
            _set(params, "outputTransform", snapshot.outputTransform)
            return status

        return self._start_run(lambda work: self.cli_arguments(snapshot, self.write_inputs(inputs, work), work / "out"),
                               apply, on_progress, on_done, work_dir)

    # --- results -----------------------------------------------------------------------------
    def apply_results(self, params, outputs: RegistrationOutputs) -> str:
        """Create/update the transform (with reference roles), warped volume, Jacobian overlay; TRE."""
        fixed, moving = get(params, "fixedVolume"), get(params, "movingVolume")
        _snap_to_fixed_grid(outputs, nodes.ijk_to_ras(fixed), fixed.GetImageData().GetDimensions())
        transform = tn.write_transform(self.scene, outputs, node=get(params, "outputTransform"),
                                       name=f"{moving.GetName()} to {fixed.GetName()} (TopoReg)")
        tn.set_reference_roles(transform, fixed, moving)
        _set(params, "outputTransform", transform)
        warped_node = None
        if get(params, "outputVolume") is not None and outputs.warped is not None:
            warped_node = nodes.ensure_volume_node(self.scene, get(params, "outputVolume"), "", outputs.warped)
        jacobian_node = None
        if get(params, "showJacobian") and outputs.jacobian is not None:
            jacobian_node = tn.write_jacobian(self.scene, outputs.jacobian,
                                              node=transform.GetNodeReference(JACOBIAN_REFERENCE),
                                              name=f"{moving.GetName()} Jacobian (TopoReg)")
            transform.SetNodeReferenceID(JACOBIAN_REFERENCE, jacobian_node.GetID())
        if get(params, "applyToMoving"):
            tn.apply_to_moving(moving, transform)
        tn.warp_along(getattr(params, "warpAlong", ()) or (), transform)
        status = (f"Done in {outputs.seconds:.1f} s ({outputs.transform_model}, {outputs.device}): "
                  f"folding {outputs.folding_percent:.3f} % of the {outputs.folding_region}")
        tre = None
        fixed_marks, moving_marks = get(params, "fixedLandmarks"), get(params, "movingLandmarks")
        if fixed_marks is not None and moving_marks is not None:
            p_fixed, p_moving = landmarks.paired_points(fixed_marks, moving_marks)
            tre = landmarks.target_registration_error(p_fixed, p_moving, lambda p: tn.map_points(p, transform))
            status += f"; {tre.describe()}"
        for message in outputs.messages:
            status += f"; {message}"
        self.last.update(transform=transform, volume=warped_node, jacobian=jacobian_node, tre=tre,
                         outputs=outputs, status=status)
        return status


def _snap_to_fixed_grid(outputs: RegistrationOutputs, fixed_affine: np.ndarray, dims) -> None:
    """Outputs live on the fixed grid; files keep its matrix in float32 only, so use the node's exact matrix."""
    u = outputs.displacement_ras
    if tuple(u.shape[:3] if u.ndim == 4 else u.shape[:2] + (1,)) != tuple(dims):
        raise nodes.input_error(f"displacement grid {u.shape[:-1]} does not match the fixed volume {tuple(dims)}")
    for volume in (outputs.warped, outputs.jacobian):
        if volume is not None:
            if not np.allclose(volume.affine, fixed_affine, atol=1e-3):
                raise nodes.input_error("registration outputs are not on the fixed volume's grid")
            volume.affine = fixed_affine.copy()
    if not np.allclose(outputs.fixed_affine, fixed_affine, atol=1e-3):
        raise nodes.input_error("the displacement field is not on the fixed volume's grid")
    outputs.fixed_affine = fixed_affine.copy()


def _set(params, name: str, value) -> None:
    """Write back a created output node into the parameters (typed wrapper or dataclass)."""
    if getattr(params, name, None) is value:
        return
    try:
        setattr(params, name, value)
    except (AttributeError, TypeError, ValueError):  # read-only or validated params: leave as is
        pass
