"""`register()`: affine pre-alignment, then the run-time-chosen deformable model, on any 2D/3D pair."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..geometry import tensor_to_volume
from ..io import Volume
from ..progress import Progress
from ..report import Timings
from ..transforms.affine import affine_coordinates, spatial_block
from ..transforms.fields import physical_displacement
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import identity_grid, sample
from .affine_stage import optimise_affine
from .deformable_stage import optimise_deformable
from .device import resolve_device, run_with_cpu_fallback
from .problem import Problem, prepare
from .result import RegistrationResult, inverse_field_ras
from .settings import RegistrationSettings
from .similarity import make_similarity


def register(fixed: Volume, moving: Volume, settings: RegistrationSettings | None = None, *,
             fixed_mask: Volume | None = None, moving_mask: Volume | None = None, weights: Volume | None = None,
             initial_transform: np.ndarray | None = None, progress: Progress | None = None,
             device: str | torch.device = "auto") -> RegistrationResult:
    """Register `moving` onto `fixed`; every output lives on the fixed image's native grid.

    `initial_transform` is a 4x4 RAS matrix mapping fixed-space points to moving-space points.
    `weights` (on the fixed grid, ≥ 0) scale each voxel's similarity term, e.g. to ignore areas of
    topological change.
    """
    settings = settings or RegistrationSettings()
    progress = progress or Progress()
    messages: list[str] = []

    def attempt(dev: torch.device) -> RegistrationResult:
        torch.manual_seed(settings.seed)
        timings = Timings()
        with timings.stage("prepare"):
            problem = prepare(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, weights=weights,
                              initial_transform=initial_transform, device=dev)
        result = _run(problem, settings, progress.sub("register", 0.0, 0.98), timings)
        result.device, result.messages = str(dev), messages
        return result

    def notify(message: str) -> None:
        messages.append(message)
        progress.update("register", 0.0, message)

    return run_with_cpu_fallback(attempt, resolve_device(device), notify)


def _run(problem: Problem, settings: RegistrationSettings, progress: Progress, timings: Timings) -> RegistrationResult:
    similarity = make_similarity(settings.similarity, **_similarity_options(settings, settings.similarity))
    affine_name = settings.affine_similarity or settings.similarity
    affine_similarity = make_similarity(affine_name, **_similarity_options(settings, affine_name))
    start = time.perf_counter()
    with timings.stage("affine"):
        affine = optimise_affine(problem, settings, affine_similarity, progress.sub("affine", 0.0, 0.3))
        voxel_map = affine.voxel_map().detach()
    field = None
    if settings.transform in ("svf", "displacement"):
        with timings.stage("deformable"):
            field = optimise_deformable(problem, voxel_map, settings, similarity, progress.sub("deformable", 0.3, 0.95))
    with timings.stage("outputs"):
        result = _assemble(problem, settings, voxel_map, field, similarity)
    timings["registration_seconds"] = round(time.perf_counter() - start, 4)
    result.timings = dict(timings)
    return result


def _similarity_options(settings: RegistrationSettings, name: str) -> dict:
    name = name.lower()
    if name in ("lncc", "ncc"):
        return {"window": settings.ncc_window}
    if name == "nmi":
        return {"bins": settings.nmi_bins, "seed": settings.seed}
    return dict(settings.extra.get("similarity_options", {}))


@torch.no_grad()
def _assemble(problem: Problem, settings: RegistrationSettings, voxel_map: torch.Tensor, field,
              similarity) -> RegistrationResult:
    fixed, moving = problem.fixed, problem.moving
    shape = fixed.grid_shape
    dev = problem.device
    points = identity_grid(shape, device=dev)
    if field is not None:
        points = points + field.displacement(shape)
    lin, trans = voxel_map[:-1, :-1].float(), voxel_map[:-1, -1].float()
    coords = torch.einsum("rc,bc...->br...", lin, points) + trans.view(1, -1, *([1] * len(shape)))
    u_ras = physical_displacement(coords, fixed.affine, moving.affine)
    warped_t = sample(problem.moving_image.new_tensor(_raw(moving)), coords)
    warped = tensor_to_volume(warped_t, fixed)
    # one Jacobian implementation for every method: the mapping seen on the fixed voxel grid,
    # x ↦ A_fixed⁻¹·A_moving·φ(x) (the voxel form of the physical field u; same determinant)
    to_fixed = spatial_block(np.linalg.inv(fixed.affine) @ moving.affine, fixed.spatial_ndim)
    g = torch.as_tensor(to_fixed, dtype=coords.dtype, device=dev)
    fixed_vox = torch.einsum("rc,bc...->br...", g[:-1, :-1], coords) + g[:-1, -1].view(1, -1, *([1] * len(shape)))
    det = jacobian_determinant(fixed_vox - identity_grid(shape, device=dev)).float().cpu()
    mask = None if problem.fixed_weight is None else problem.fixed_weight.cpu()[0, 0] > 0
    region = "fixed mask" if mask is not None else "whole fixed grid"
    fold = folding_fraction(det[0], mask)
    before_coords = affine_coordinates(problem.base.float(), shape, device=dev)
    sim_before = similarity(sample(problem.moving_image, before_coords), problem.fixed_image, problem.fixed_weight)
    sim_after = similarity(sample(problem.moving_image, coords), problem.fixed_image, problem.fixed_weight)
    inverse = None
    if settings.transform != "displacement":
        inv_disp = field.inverse_displacement(shape) if field is not None else None
        inverse = inverse_field_ras(moving, fixed, voxel_map, inv_disp)
    affine_ras = _embed(voxel_map.cpu().numpy(), fixed, moving)
    return RegistrationResult(
        fixed=fixed, moving=moving, moving_coords=coords, displacement_ras=u_ras, warped=warped,
        jacobian=tensor_to_volume(det[None], fixed), folding_fraction=fold, folding_region=region,
        affine_ras=affine_ras, inverse_displacement_ras=inverse, similarity_before=float(sim_before),
        similarity_after=float(sim_after), settings={k: v for k, v in vars(settings).items() if k != "extra"},
    )


def _raw(moving: Volume) -> np.ndarray:
    return np.asarray(moving.data, np.float32).reshape(moving.grid_shape)[None, None]


def _embed(voxel_block: np.ndarray, fixed: Volume, moving: Volume) -> np.ndarray:
    """The affine part as a 4x4 RAS→RAS matrix (fixed point → moving point)."""
    n = voxel_block.shape[0] - 1
    m = np.eye(4)
    idx = list(range(n)) + [3]
    m[np.ix_(idx, idx)] = voxel_block
    return moving.affine @ m @ np.linalg.inv(fixed.affine)
