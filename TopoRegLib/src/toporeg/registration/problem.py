"""A registration problem prepared for optimisation: normalised tensors, weights and the base voxel map."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..geometry import percentile_normalize, resample_to, volume_to_tensor
from ..io import Volume, check_geometry, check_intensities
from ..transforms.affine import spatial_block, voxel_matrix
from .pyramid import Level, blur_for_sampling, level_image


@dataclass
class Problem:
    fixed: Volume
    moving: Volume
    fixed_image: torch.Tensor              # (1, 1, *Sf) in [0, 1]
    moving_image: torch.Tensor             # (1, 1, *Sm) in [0, 1]
    fixed_weight: torch.Tensor | None      # (1, 1, *Sf): fixed mask × user weights
    moving_mask: torch.Tensor | None       # (1, 1, *Sm)
    base: torch.Tensor                     # (ndim+1)²: fixed voxel → moving voxel of the initial transform
    frame: torch.Tensor                    # (ndim,) fixed spacing: fixed voxel → isotropic mm frame
    moving_spacing: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    def fixed_on(self, level: Level) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fixed image and weights on a pyramid level (computed once per level)."""
        key = ("fixed", level.factor)
        if key not in self._cache:
            weight = None if self.fixed_weight is None else level_image(self.fixed_weight, level)
            self._cache[key] = (level_image(self.fixed_image, level), weight)
        return self._cache[key]

    def moving_for(self, level: Level) -> torch.Tensor:
        """Moving image pre-blurred for sampling at a level's spacing (anti-aliasing; computed once)."""
        key = ("moving", level.factor)
        if key not in self._cache:
            ratio = level.scale * self.frame.cpu().numpy() / self.moving_spacing
            self._cache[key] = blur_for_sampling(self.moving_image, ratio)
        return self._cache[key]

    @property
    def ndim(self) -> int:
        return self.fixed.spatial_ndim

    @property
    def device(self) -> torch.device:
        return self.fixed_image.device


def prepare(fixed: Volume, moving: Volume, *, fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
            weights: Volume | None = None, initial_transform: np.ndarray | None = None,
            device: torch.device | str = "cpu") -> Problem:
    """Validate inputs and build the tensors every stage shares."""
    for vol, role in ((fixed, "fixed"), (moving, "moving")):
        path = vol.meta.get("path", f"{role} image")
        check_geometry(vol, path)
        check_intensities(vol, path)
        if vol.has_channels:
            raise InputError("multi-channel images are not supported for registration; pick one channel", path)
    if fixed.spatial_ndim != moving.spatial_ndim:
        raise InputError(f"cannot register a {moving.spatial_ndim}D moving image to a {fixed.spatial_ndim}D fixed image")
    ndim = fixed.spatial_ndim
    init = np.eye(4) if initial_transform is None else np.asarray(initial_transform, float)
    if init.shape != (4, 4) or not np.all(np.isfinite(init)) or abs(np.linalg.det(init[:3, :3])) < 1e-9:
        raise InputError("initial transform must be an invertible 4x4 RAS matrix")
    _check_overlap(fixed, moving, init)

    def mask_on(mask: Volume | None, grid: Volume, role: str) -> np.ndarray | None:
        if mask is None:
            return None
        binary = mask.with_data((np.asarray(mask.data) > 0).astype(np.uint8), is_label=True)
        if not binary.same_grid(grid):
            binary = resample_to(binary, grid, interpolation="nearest")
        arr = binary.data.reshape(grid.grid_shape) > 0
        if not arr.any():
            raise InputError(f"{role} mask is empty (no voxel > 0)", mask.meta.get("path"))
        return arr

    def normalised(vol: Volume, mask: np.ndarray | None) -> Volume:
        data = percentile_normalize(vol.data.reshape(vol.grid_shape), 0.5, 99.5, mask=mask)
        return vol.with_data(data.reshape(vol.spatial_shape))

    fmask = mask_on(fixed_mask, fixed, "fixed")
    mmask = mask_on(moving_mask, moving, "moving")
    f_img, m_img = normalised(fixed, fmask), normalised(moving, mmask)
    weight = None if fmask is None else fmask.astype(np.float32)
    if weights is not None:
        w = weights if weights.same_grid(fixed) else resample_to(weights, fixed)
        w_arr = np.asarray(w.data, np.float32).reshape(fixed.grid_shape)
        if not np.all(np.isfinite(w_arr)) or w_arr.min() < 0:
            raise InputError("similarity weights must be finite and >= 0", weights.meta.get("path"))
        weight = w_arr if weight is None else weight * w_arr

    def tensor(arr: np.ndarray | None, like: Volume) -> torch.Tensor | None:
        if arr is None:
            return None
        return torch.as_tensor(arr.reshape(like.grid_shape), dtype=torch.float32, device=device)[None, None]

    base = spatial_block(voxel_matrix(init, fixed.affine, moving.affine), ndim)
    return Problem(
        fixed=fixed, moving=moving,
        fixed_image=volume_to_tensor(f_img, device=device), moving_image=volume_to_tensor(m_img, device=device),
        fixed_weight=tensor(weight, fixed), moving_mask=tensor(mmask, moving) if mmask is not None else None,
        base=torch.as_tensor(base, dtype=torch.float64, device=device),
        frame=torch.as_tensor(fixed.spacing[:ndim], dtype=torch.float64, device=device),
        moving_spacing=moving.spacing[:ndim].copy(),
    )


def _check_overlap(fixed: Volume, moving: Volume, init: np.ndarray) -> None:
    """Refuse pairs whose fields of view do not overlap at all (after the initial transform)."""
    def box(vol: Volume, transform: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        shape = vol.spatial_shape + (1,) * (3 - len(vol.spatial_shape))
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1).T
        pts = vol.voxel_to_ras(corners)
        if transform is not None:
            pts = pts @ transform[:3, :3].T + transform[:3, 3]
        return pts.min(0), pts.max(0)

    f_lo, f_hi = box(fixed, init)
    m_lo, m_hi = box(moving)
    tol = np.maximum(fixed.spacing, moving.spacing)
    if np.any(f_hi + tol < m_lo) or np.any(m_hi + tol < f_lo):
        raise InputError("the fixed and moving images do not overlap in physical space; check their origins "
                         "and orientations, or give an --initial-transform")
