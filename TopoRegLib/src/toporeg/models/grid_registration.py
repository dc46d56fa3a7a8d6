"""Learned registration on a model's grid, mapped back to the native fixed grid (shared by every learned method).

1. Pre-alignment T (fixed RAS point → moving RAS point): the optimisation engine's affine, a given linear
   transform, or none (methods built for large misalignment, e.g. CARL).
2. The model's grid (`model_grid`: its card's spacing and shape, centred on the fixed foreground); fixed and
   T-resampled moving are sampled onto it and percentile-normalised as in training.
3. The method (`FieldMethod`) gives u on that grid in its voxels (x_moving = x + u(x)) and, when it has one,
   the inverse.
4. For every native fixed voxel x: y = G⁻¹A_f x, y' = y + u(y) (border-extended outside the model grid),
   moving voxel = A_m⁻¹ T G y'. Outputs are assembled exactly like the engine's (`moving_coords`,
   `displacement_ras`, warped, Jacobian, folding, inverse on the moving grid), plus per-method maps
   (e.g. VoxelMorph-diff's velocity variance) brought onto the fixed grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError
from ..geometry import percentile_normalize, resample_to, tensor_to_volume, volume_to_tensor
from ..io import Volume, save_volume
from ..progress import Progress
from ..registration import RegistrationResult, RegistrationSettings, make_similarity, register
from ..transforms.affine import affine_coordinates, spatial_block, voxel_matrix
from ..transforms.fields import physical_displacement, voxel_displacement_from_physical
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import sample
from .model_grid import PERCENTILES, learned_domain_messages, model_grid, network_input
from .weights import load_model


@dataclass
class GridField:
    """A method's answer on the model grid: u and its inverse (voxels of that grid), maps to show, settings."""

    displacement: torch.Tensor                      # (1, ndim, *grid)
    inverse: torch.Tensor | None = None             # (1, ndim, *grid): moving-side grid point → fixed-side offset
    maps: dict[str, torch.Tensor] = field(default_factory=dict)   # name → (1, 1, *grid), already in output units
    map_units: dict[str, str] = field(default_factory=dict)       # name → unit suffix of its report key ("mm2")
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


FieldMethod = Callable[[torch.Tensor, torch.Tensor, Volume, Progress], GridField]
"""(moving on the grid, fixed on the grid, the grid, progress) → GridField; runs under torch.no_grad()."""


@dataclass
class LearnedRegistrationResult(RegistrationResult):
    """A `RegistrationResult` plus the method's maps on the fixed grid (e.g. `uncertainty`, mm²)."""

    maps: dict[str, Volume] = field(default_factory=dict)
    map_units: dict[str, str] = field(default_factory=dict)
    model_card: dict[str, Any] = field(default_factory=dict)

    @property
    def uncertainty(self) -> Volume | None:
        return self.maps.get("uncertainty")

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["model"] = self.model_card.get("name")
        for name, vol in self.maps.items():
            unit = self.map_units.get(name)
            out[f"{name}_mean_{unit}" if unit else f"{name}_mean"] = float(np.mean(vol.data))
        return out

    def save(self, out_dir: str | Path, *, moving_labels: Volume | None = None) -> dict[str, str]:
        written = super().save(out_dir, moving_labels=moving_labels)
        for name, vol in self.maps.items():
            written[name] = f"{name}.nii.gz"
            save_volume(vol, Path(out_dir) / written[name])
        return written


def load_method_model(model: torch.nn.Module | str | Path, card: dict[str, Any] | None, ndim: int,
                      device: torch.device, expected: type | None = None, method: str = "learned"
                      ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model on `device` in eval mode, its card): a module as given, or weights + card loaded (checksum checked);
    refuses another architecture than `expected` and a model of another dimension than the images'."""
    if not isinstance(model, torch.nn.Module):
        model, card = load_model(model, device=device)
    if expected is not None and not isinstance(model, expected):
        raise InputError(f"--method {method} needs a {expected.__name__} model, not {type(model).__name__} "
                         "(see `toporeg models`)")
    if getattr(model, "ndim", ndim) != ndim:
        raise InputError(f"the model is {model.ndim}D but the images are {ndim}D")
    return model.to(device).eval(), card or {}


def _apply(matrix: np.ndarray, coords: torch.Tensor) -> torch.Tensor:
    """(ndim+1)² homogeneous voxel map applied to coordinates (1, ndim, *S)."""
    m = torch.as_tensor(matrix, dtype=coords.dtype, device=coords.device)
    nd = coords.shape[1]
    return torch.einsum("rc,bc...->br...", m[:nd, :nd], coords) + m[:nd, nd].view(1, nd, *([1] * nd))


def prealign(fixed: Volume, moving: Volume, mode: str, settings: RegistrationSettings, *,
             initial: np.ndarray | None = None, fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
             progress: Progress, device: torch.device) -> tuple[np.ndarray, list[str]]:
    """(T, messages): 'affine' runs the engine (from `initial` when given); 'none' uses `initial` or identity."""
    if mode == "none":
        return (np.eye(4) if initial is None else np.asarray(initial, float)), []
    if mode != "affine":
        raise ValueError(f"pre-alignment must be 'affine' or 'none', not {mode!r}")
    aff = register(fixed, moving, settings.with_(transform="affine"), fixed_mask=fixed_mask, moving_mask=moving_mask,
                   initial_transform=initial, progress=progress, device=device)
    return aff.affine_ras, list(aff.messages)


def register_on_model_grid(fixed: Volume, moving: Volume, card: dict[str, Any], method: FieldMethod, *,
                           name: str, transform_ras: np.ndarray, similarity: str = "lncc", ncc_window: int = 5,
                           fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
                           messages: list[str] | None = None, progress: Progress | None = None,
                           device: torch.device, start: float | None = None) -> LearnedRegistrationResult:
    """Run `method` on the model grid after pre-alignment `transform_ras`; outputs on the native fixed grid."""
    progress = progress or Progress()
    start = time.perf_counter() if start is None else start
    t_pre = time.perf_counter() - start
    ndim, dev = fixed.spatial_ndim, device
    grid = model_grid(fixed, card, fixed_mask)
    msgs = list(messages or []) + learned_domain_messages(fixed, grid, card, fixed_mask)
    with torch.no_grad():
        f_net = network_input(fixed, grid, mask=fixed_mask, device=dev)
        m_net = network_input(moving, grid, mask=moving_mask, transform=transform_ras, device=dev)
    t_net = time.perf_counter()
    answer = method(m_net, f_net, grid, progress.sub(name, 0.0, 0.9))
    t_net = time.perf_counter() - t_net
    progress.update("outputs", 0.9, "mapping the field back to the fixed grid")
    with torch.no_grad():
        g = grid.affine
        to_net = spatial_block(voxel_matrix(np.eye(4), fixed.affine, g), ndim)
        to_moving = spatial_block(voxel_matrix(transform_ras, g, moving.affine), ndim)
        y = affine_coordinates(to_net, fixed.grid_shape, device=dev)
        disp = answer.displacement.to(dev)
        coords = _apply(to_moving, y + sample(disp, y, padding="border"))
        u_ras = physical_displacement(coords, fixed.affine, moving.affine)
        raw = torch.as_tensor(np.asarray(moving.data, np.float32).reshape(moving.grid_shape), device=dev)[None, None]
        warped = tensor_to_volume(sample(raw, coords), fixed)
        det = jacobian_determinant(torch.as_tensor(
            voxel_displacement_from_physical(u_ras, fixed.affine, ndim))[None]).float()
        mask = None if fixed_mask is None else torch.as_tensor(np.asarray(
            resample_to(fixed_mask, fixed, interpolation="nearest").data).reshape(fixed.grid_shape) > 0)
        fold = folding_fraction(det[0], mask)
        inverse_ras = None
        if answer.inverse is not None:  # moving voxel → model grid (T⁻¹) → + u_inv → fixed voxel
            z = affine_coordinates(spatial_block(voxel_matrix(np.linalg.inv(transform_ras), moving.affine, g), ndim),
                                   moving.grid_shape, device=dev)
            back = _apply(spatial_block(voxel_matrix(np.eye(4), g, fixed.affine), ndim),
                          z + sample(answer.inverse.to(dev), z, padding="border"))
            inverse_ras = physical_displacement(back, moving.affine, fixed.affine)
        maps = {k: tensor_to_volume(sample(v.to(dev), y, padding="border"), fixed) for k, v in answer.maps.items()}
        before, after = _similarities(fixed, moving, similarity, ncc_window, _apply(to_moving, y), coords, dev)
    total = time.perf_counter() - start
    return LearnedRegistrationResult(
        fixed=fixed, moving=moving, moving_coords=coords, displacement_ras=u_ras, warped=warped,
        jacobian=tensor_to_volume(det[None], fixed), folding_fraction=fold,
        folding_region="fixed mask" if mask is not None else "whole fixed grid", affine_ras=transform_ras,
        inverse_displacement_ras=inverse_ras, similarity_before=before, similarity_after=after,
        timings={"affine": round(t_pre, 4), name: round(t_net, 4), "registration_seconds": round(total, 4)},
        settings={"method": name, "model": card.get("name"), "model_sha256": card.get("sha256"), **answer.settings,
                  "similarity": similarity,
                  "model_grid": {"shape": list(grid.grid_shape), "affine": np.round(g, 6).tolist()}},
        device=str(dev), messages=msgs + answer.messages, maps=maps, map_units=dict(answer.map_units),
        model_card=card)


def _similarities(fixed: Volume, moving: Volume, similarity: str, ncc_window: int, before_coords: torch.Tensor,
                  after_coords: torch.Tensor, dev: torch.device) -> tuple[float, float]:
    """Similarity on engine-normalised intensities, pre-aligned only vs registered."""
    sim = make_similarity(similarity, **({"window": ncc_window} if similarity in ("lncc", "ncc") else {}))

    def tensor(vol: Volume) -> torch.Tensor:
        return volume_to_tensor(vol.with_data(percentile_normalize(np.asarray(vol.data, np.float32), *PERCENTILES)),
                                device=dev)
    f_t, m_t = tensor(fixed), tensor(moving)
    return float(sim(sample(m_t, before_coords), f_t)), float(sim(sample(m_t, after_coords), f_t))
