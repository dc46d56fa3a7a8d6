"""Learned registration at inference: affine (optimisation engine) → model grid → network → native fixed grid.

1. `toporeg.registration.register(..., transform='affine')` gives T (fixed RAS point → moving RAS point).
2. The model's grid (its card: 2 mm, shape, canonical RAS axes; 2D models: the fixed image's plane) is centred on
   the fixed image's foreground; fixed and T-resampled moving are sampled onto it and percentile-normalised
   (0.5/99.5, clipped) as in training.
3. The network (mean velocity, T_int scaling-and-squaring steps, optionally refined by instance optimisation)
   gives u_net and its inverse exp(−v) on that grid.
4. For every native fixed voxel x: y = G⁻¹A_f x, y' = y + u_net(y) (border-extended outside the model grid),
   moving voxel = A_m⁻¹ T G y'. Outputs are assembled exactly like the engine's (`moving_coords`,
   `displacement_ras`, warped, Jacobian, folding, inverse on the moving grid), plus `uncertainty`: the posterior
   velocity variance Σ_c Σ_c in mm² on the fixed grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..geometry import percentile_normalize, resample_to, tensor_to_volume, volume_to_tensor
from ..io import Volume, save_volume
from ..progress import Progress
from ..registration import RegistrationResult, RegistrationSettings, make_similarity, register
from ..registration.device import resolve_device
from ..transforms.affine import affine_coordinates, spatial_block, voxel_matrix
from ..transforms.fields import physical_displacement, voxel_displacement_from_physical
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import sample, warp
from .losses import GaussianImageTerm, laplacian_quadratic
from .weights import load_model

PERCENTILES = (0.5, 99.5)


@dataclass
class LearnedRegistrationResult(RegistrationResult):
    """A `RegistrationResult` plus the model's registration uncertainty (velocity variance, mm², fixed grid)."""

    uncertainty: Volume | None = None
    model_card: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["model"] = self.model_card.get("name")
        if self.uncertainty is not None:
            out["uncertainty_mean_mm2"] = float(np.mean(self.uncertainty.data))
        return out

    def save(self, out_dir: str | Path, *, moving_labels: Volume | None = None) -> dict[str, str]:
        written = super().save(out_dir, moving_labels=moving_labels)
        if self.uncertainty is not None:
            written["uncertainty"] = "uncertainty.nii.gz"
            save_volume(self.uncertainty, Path(out_dir) / written["uncertainty"])
        return written


def model_grid(fixed: Volume, card: dict[str, Any], fixed_mask: Volume | None = None) -> Volume:
    """The model's grid (zeros volume), axes RAS (3D) or the fixed plane's axes (2D), centred on the foreground."""
    dom = card.get("input_domain", {})
    ndim = fixed.spatial_ndim
    shape = tuple(int(n) for n in dom.get("shape", (96, 112, 96)[:ndim]))
    spacing = np.asarray(dom.get("spacing_mm", [2.0] * ndim), float)
    if len(shape) != ndim:
        raise InputError(f"the model is {len(shape)}D but the images are {ndim}D")
    if ndim == 3:
        axes = np.eye(3)
    else:  # the fixed plane's axes, flipped/ordered to be closest to R, A, S
        d = fixed.direction[:, :2] * np.sign(fixed.direction[np.abs(fixed.direction[:, :2]).argmax(0), [0, 1]])
        axes = np.column_stack([d[:, np.argsort(np.abs(d).argmax(0))], fixed.direction[:, 2]])
    weight = foreground(fixed, fixed_mask)
    idx = np.argwhere(weight).mean(0) if weight.any() else (np.array(fixed.grid_shape) - 1) / 2.0
    centre = fixed.voxel_to_ras(np.concatenate([idx, np.zeros(3 - ndim)]))
    affine = np.eye(4)
    affine[:3, :3] = axes * np.concatenate([spacing, [fixed.spacing[2]] * (3 - ndim)])
    half = np.concatenate([(np.array(shape) - 1) / 2.0, np.zeros(3 - ndim)])
    affine[:3, 3] = centre - affine[:3, :3] @ half
    return Volume(np.zeros(shape + ((1,) if ndim == 2 else ()), np.uint8), affine)


def network_input(volume: Volume, grid: Volume, *, mask: Volume | None = None, transform: np.ndarray | None = None,
                  device=None) -> torch.Tensor:
    """(1, 1, *grid) input of a network: `volume` (skull-stripped by `mask` when given, as the models expect)
    resampled onto `grid` through `transform` (RAS grid point → volume point), percentile-normalised."""
    data = np.asarray(volume.data, np.float32)
    if mask is not None:
        m = mask if mask.same_grid(volume) else resample_to(mask, volume, interpolation="nearest")
        data = data * (np.asarray(m.data).reshape(data.shape) > 0)
    res = resample_to(volume.with_data(data), grid, transform=transform, device=device)
    data = percentile_normalize(np.asarray(res.data).reshape(grid.grid_shape), *PERCENTILES)
    return torch.as_tensor(data, device=device)[None, None]


def foreground(fixed: Volume, fixed_mask: Volume | None = None, percentiles: tuple[float, float] = PERCENTILES
               ) -> np.ndarray:
    """Boolean foreground on the fixed grid: the mask, else normalised intensity > 0.1."""
    if fixed_mask is not None:
        mask = resample_to(fixed_mask, fixed, interpolation="nearest").data
        return np.asarray(mask).reshape(fixed.grid_shape) > 0
    data = np.asarray(fixed.data, np.float32).reshape(fixed.grid_shape)
    return percentile_normalize(data, *percentiles) > 0.1


def _apply(matrix: np.ndarray, coords: torch.Tensor) -> torch.Tensor:
    """(ndim+1)² homogeneous voxel map applied to coordinates (1, ndim, *S)."""
    m = torch.as_tensor(matrix, dtype=coords.dtype, device=coords.device)
    nd = coords.shape[1]
    return torch.einsum("rc,bc...->br...", m[:nd, :nd], coords) + m[:nd, nd].view(1, nd, *([1] * nd))


def _refine(model, velocity: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor, iterations: int,
            card: dict[str, Any], int_steps: int) -> torch.Tensor:
    """Instance optimisation of the mean velocity under the training loss (image term + Laplacian prior)."""
    cfg = card.get("training", {}).get("config", {})
    image, lam = GaussianImageTerm(cfg.get("sigma2", 0.02)), float(cfg.get("lam", 20.0))
    v = velocity.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=0.05)
    n_full = fixed[0, 0].numel()
    for _ in range(iterations):
        with torch.enable_grad():
            disp = model.integrate(v, fixed.shape[2:], int_steps)
            loss = image(warp(moving, disp), fixed) + 0.5 * lam * laplacian_quadratic(v) / n_full
            opt.zero_grad()
            loss.backward()
            opt.step()
    return v.detach()


def learned_register(fixed: Volume, moving: Volume, model: torch.nn.Module | str | Path, *,
                     refine_iterations: int = 0, int_steps: int | None = None,
                     affine_settings: RegistrationSettings | None = None, fixed_mask: Volume | None = None,
                     moving_mask: Volume | None = None, card: dict[str, Any] | None = None,
                     progress: Progress | None = None, device: str | torch.device = "auto"
                     ) -> LearnedRegistrationResult:
    """Register `moving` onto `fixed` with a VoxelMorph-diff model (module, or weights path with its card)."""
    progress = progress or Progress()
    start = time.perf_counter()
    dev = resolve_device(device)
    if not isinstance(model, torch.nn.Module):
        model, card = load_model(model, device=dev)
    card = card or {}
    model = model.to(dev).eval()
    if getattr(model, "ndim", fixed.spatial_ndim) != fixed.spatial_ndim:
        raise InputError(f"the model is {model.ndim}D but the images are {fixed.spatial_ndim}D")
    settings = (affine_settings or RegistrationSettings()).with_(transform="affine")
    aff = register(fixed, moving, settings, fixed_mask=fixed_mask, moving_mask=moving_mask,
                   progress=progress.sub("affine", 0.0, 0.6), device=dev)
    with torch.no_grad():
        return _learned(fixed, moving, model, card, aff, settings, refine_iterations, int_steps, fixed_mask,
                        moving_mask, progress, dev, start)


def _learned(fixed, moving, model, card, aff, settings, refine_iterations, int_steps, fixed_mask, moving_mask,
             progress, dev, start) -> LearnedRegistrationResult:
    t_affine = time.perf_counter() - start
    progress.update("network", 0.6, "learned deformable registration")
    ndim, steps = fixed.spatial_ndim, int_steps or model.int_steps
    grid = model_grid(fixed, card, fixed_mask)
    messages = list(aff.messages) + learned_domain_messages(fixed, grid, card, fixed_mask)

    f_net = network_input(fixed, grid, mask=fixed_mask, device=dev)
    m_net = network_input(moving, grid, mask=moving_mask, transform=aff.affine_ras, device=dev)
    out = model(m_net, f_net, sample=False, int_steps=steps)
    velocity = out.velocity_mean
    if refine_iterations > 0:
        velocity = _refine(model, velocity, m_net, f_net, refine_iterations, card, steps)
    disp = model.integrate(velocity, grid.grid_shape, steps)
    inv = model.integrate(-velocity, grid.grid_shape, steps)
    progress.update("outputs", 0.9, "mapping the field back to the fixed grid")

    # fixed voxel → model-grid voxel → + u_net → moving voxel (through the affine)
    g = grid.affine
    to_net = spatial_block(voxel_matrix(np.eye(4), fixed.affine, g), ndim)
    to_moving = spatial_block(voxel_matrix(aff.affine_ras, g, moving.affine), ndim)
    y = affine_coordinates(to_net, fixed.grid_shape, device=dev)
    coords = _apply(to_moving, y + sample(disp, y, padding="border"))
    u_ras = physical_displacement(coords, fixed.affine, moving.affine)
    raw = torch.as_tensor(np.asarray(moving.data, np.float32).reshape(moving.grid_shape), device=dev)[None, None]
    warped = tensor_to_volume(sample(raw, coords), fixed)
    det = jacobian_determinant(torch.as_tensor(
        voxel_displacement_from_physical(u_ras, fixed.affine, ndim))[None]).float()
    mask = None if fixed_mask is None else torch.as_tensor(np.asarray(
        resample_to(fixed_mask, fixed, interpolation="nearest").data).reshape(fixed.grid_shape) > 0)
    fold = folding_fraction(det[0], mask)
    # inverse on the moving grid: moving voxel → model grid (T⁻¹) → + u_inv → fixed voxel
    z = affine_coordinates(spatial_block(voxel_matrix(np.linalg.inv(aff.affine_ras), moving.affine, g), ndim),
                           moving.grid_shape, device=dev)
    back = _apply(spatial_block(voxel_matrix(np.eye(4), g, fixed.affine), ndim), z + sample(inv, z, padding="border"))
    inverse_ras = physical_displacement(back, moving.affine, fixed.affine)
    var_mm2 = out.uncertainty() * float(np.mean(grid.spacing[:ndim]) ** 2)
    uncertainty = tensor_to_volume(sample(var_mm2, y, padding="border"), fixed)
    # similarity on engine-normalised intensities, for before (affine only) / after
    sim = make_similarity(settings.similarity, **({"window": settings.ncc_window}
                                                  if settings.similarity in ("lncc", "ncc") else {}))
    f_t = volume_to_tensor(fixed.with_data(percentile_normalize(np.asarray(fixed.data, np.float32), *PERCENTILES)),
                           device=dev)
    m_t = volume_to_tensor(moving.with_data(percentile_normalize(np.asarray(moving.data, np.float32), *PERCENTILES)),
                           device=dev)
    before = float(sim(sample(m_t, _apply(to_moving, y)), f_t))
    after = float(sim(sample(m_t, coords), f_t))
    total = time.perf_counter() - start
    return LearnedRegistrationResult(
        fixed=fixed, moving=moving, moving_coords=coords, displacement_ras=u_ras, warped=warped,
        jacobian=tensor_to_volume(det[None], fixed), folding_fraction=fold,
        folding_region="fixed mask" if mask is not None else "whole fixed grid", affine_ras=aff.affine_ras,
        inverse_displacement_ras=inverse_ras, similarity_before=before, similarity_after=after,
        timings={"affine": round(t_affine, 4), "learned": round(total - t_affine, 4),
                 "registration_seconds": round(total, 4)},
        settings={"method": "learned", "model": card.get("name"), "model_sha256": card.get("sha256"),
                  "int_steps": steps, "refine_iterations": refine_iterations, "similarity": settings.similarity,
                  "model_grid": {"shape": list(grid.grid_shape), "affine": np.round(g, 6).tolist()},
                  "affine_settings": {k: v for k, v in vars(settings).items() if k != "extra"}},
        device=str(dev), messages=messages, uncertainty=uncertainty, model_card=card)


def learned_domain_messages(fixed: Volume, grid: Volume, card: dict[str, Any], fixed_mask: Volume | None
                            ) -> list[str]:
    """Warnings when the input looks outside the model card's input domain."""
    msgs = []
    nd = fixed.spatial_ndim
    fg = foreground(fixed, fixed_mask)
    if not fg.any():
        return ["the fixed image has no foreground above 10 % of its intensity range"]
    idx = np.argwhere(fg)
    extent = (idx.max(0) - idx.min(0)) * fixed.spacing[:nd]
    fov = (np.array(grid.grid_shape) - 1) * grid.spacing[:nd]
    if np.any(extent > fov + 1e-3):
        msgs.append(f"the fixed image's foreground ({' x '.join(f'{e:.0f}' for e in extent)} mm) is larger than the "
                    f"model's field of view ({' x '.join(f'{e:.0f}' for e in fov)} mm); outside it the deformation "
                    "is extended from the grid border")
    head = whole_head_warning(fg, fixed.spacing[:nd], card, "give a brain mask or a skull-stripped image")
    return msgs + ([head] if head else [])


WHOLE_HEAD_LITRES = 2.5  # a brain is about 1.1-1.9 L; a whole head's foreground is well above


def whole_head_warning(fg: np.ndarray, spacing: Sequence[float], card: dict[str, Any], remedy: str) -> str | None:
    """A warning when a 3D foreground looks like a whole head but the card's model saw only skull-stripped brains."""
    litres = float(fg.sum() * np.prod(spacing)) / 1e6
    if card.get("input_domain", {}).get("skull") != "stripped" or fg.ndim != 3 or litres <= WHOLE_HEAD_LITRES:
        return None
    return (f"the model was trained on skull-stripped brains, but this image's foreground is {litres:.1f} L (a brain "
            f"is about 1.1-1.9 L): it looks like a whole head; results may be poor ({remedy})")
