"""Scores of one registration result: label Dice, displacement error, folding, landmark error.

Every method (ours and peers') is scored from the same thing: its RAS-mm displacement `u` on the fixed
grid, with x_moving = x_fixed + u(x_fixed) (shared/CONVENTIONS.md). Labels are carried to the fixed grid
by that field here, never by a peer's own resampler, so all methods get the same interpolation.
Folding goes through `toporeg.transforms.jacobian`, the one implementation every report uses.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..geometry.tensors import tensor_to_volume, volume_to_tensor
from ..io.volume import Volume
from ..transforms.fields import moving_coordinates, voxel_displacement_from_physical
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import sample


def _array(x: Volume | np.ndarray) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Volume) else x)


def _mask(mask: Volume | np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    return _array(mask).reshape(shape) > 0


def warp_with_physical_field(moving: Volume, fixed: Volume, u_ras: np.ndarray,
                             interpolation: Literal["linear", "nearest"] = "linear") -> Volume:
    """`moving ∘ φ` on the fixed grid for φ(x) = x + u_ras(x): the pull-back every score uses."""
    ndim = fixed.spatial_ndim
    coords = moving_coordinates(np.asarray(u_ras, np.float64), fixed.affine, moving.affine, ndim)
    image = volume_to_tensor(moving, dtype=torch.float32)
    out = sample(image, torch.as_tensor(coords[None], dtype=torch.float32), mode=interpolation)
    if moving.is_label or interpolation == "nearest":
        return tensor_to_volume(out.round(), fixed, is_label=moving.is_label, dtype=moving.data.dtype)
    return tensor_to_volume(out, fixed, dtype=np.float32)


def mask_dice(a: Volume | np.ndarray, b: Volume | np.ndarray) -> float:
    """Dice of the non-zero voxels of two images (0 when both are empty)."""
    a, b = _array(a) > 0, _array(b) > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def dice_per_label(labels_a: Volume | np.ndarray, labels_b: Volume | np.ndarray,
                   exclude_background: bool = True) -> dict[int, float]:
    """Dice of each label value present in `labels_a` (the fixed labels); absent in b scores 0."""
    a, b = _array(labels_a).astype(np.int64).ravel(), _array(labels_b).astype(np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {a.shape} vs {b.shape}")
    values = np.unique(a)
    if exclude_background:
        values = values[values != 0]
    n = int(max(a.max(initial=0), b.max(initial=0))) + 1
    both = np.bincount(a[a == b], minlength=n)
    count_a, count_b = np.bincount(a, minlength=n), np.bincount(b, minlength=n)
    return {int(v): float(2 * both[v] / (count_a[v] + count_b[v])) for v in values}


def mean_dice(labels_a: Volume | np.ndarray, labels_b: Volume | np.ndarray, exclude_background: bool = True) -> float:
    """Mean Dice over the label values present in `labels_a` (pass the fixed labels first)."""
    scores = dice_per_label(labels_a, labels_b, exclude_background)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def displacement_error_p95(u_est_ras: np.ndarray, u_gt_ras: np.ndarray,
                           mask: Volume | np.ndarray | None = None) -> float:
    """95th percentile of |u_est − u_gt| (mm) inside the fixed foreground mask (whole grid if None)."""
    err = np.linalg.norm(np.asarray(u_est_ras, np.float64) - np.asarray(u_gt_ras, np.float64), axis=-1)
    return float(np.percentile(err[_mask(mask, err.shape)], 95))


def jacobian_of_physical(u_ras: np.ndarray, fixed: Volume) -> torch.Tensor:
    """(1, *S) signed det J of x ↦ x + u(x), via the shared `toporeg.transforms.jacobian`."""
    ndim = fixed.spatial_ndim
    vox = voxel_displacement_from_physical(np.asarray(u_ras, np.float64), fixed.affine, ndim)
    return jacobian_determinant(torch.as_tensor(vox[None], dtype=torch.float64))


def folding_percent(u_ras: np.ndarray, fixed: Volume, mask: Volume | np.ndarray | None = None) -> float:
    """% of voxels with det J ≤ 0 inside the fixed foreground mask (whole grid if None)."""
    det = jacobian_of_physical(u_ras, fixed)
    m = None if mask is None else torch.as_tensor(_mask(mask, tuple(det.shape[1:])))
    return 100.0 * folding_fraction(det[0], m)


def map_points(u_ras: np.ndarray, fixed: Volume, points_ras: np.ndarray) -> np.ndarray:
    """φ(p) = p + u(p) for RAS points p, u interpolated trilinearly (border values outside the grid)."""
    pts = np.atleast_2d(np.asarray(points_ras, np.float64))
    ndim = fixed.spatial_ndim
    vox = fixed.ras_to_voxel(pts)[:, :ndim]
    coords = torch.as_tensor(vox.T.reshape(1, ndim, len(pts), *([1] * (ndim - 1))), dtype=torch.float64)
    field = torch.as_tensor(np.moveaxis(np.asarray(u_ras, np.float64), -1, 0)[None])
    u = sample(field, coords, padding="border").reshape(3, len(pts)).T.numpy()
    return pts + u


def landmark_errors(u_ras: np.ndarray, fixed: Volume, fixed_pts: np.ndarray, moving_pts: np.ndarray) -> np.ndarray:
    """Distance (mm) from each mapped fixed landmark φ(p) to its moving-image counterpart."""
    return np.linalg.norm(map_points(u_ras, fixed, fixed_pts) - np.asarray(moving_pts, np.float64), axis=-1)


def landmark_error(u_ras: np.ndarray, fixed: Volume, fixed_pts: np.ndarray, moving_pts: np.ndarray) -> float:
    """Mean landmark distance (mm) after mapping fixed landmarks through φ."""
    return float(np.mean(landmark_errors(u_ras, fixed, fixed_pts, moving_pts)))


__all__ = [
    "dice_per_label", "displacement_error_p95", "folding_percent", "jacobian_of_physical", "landmark_error",
    "landmark_errors", "map_points", "mean_dice", "warp_with_physical_field",
]
