"""Checks that turn unusable images into one clear `InputError` before any work starts."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .volume import Volume

MAX_VOXELS = 1024**3  # ~1e9 voxels: beyond this a float32 copy alone needs 4 GB


def check_geometry(volume: Volume, path: str | None = None) -> None:
    """Affine must be finite and invertible, with positive spacing on every spatial axis."""
    path = path or volume.meta.get("path")
    aff = volume.affine
    if not np.all(np.isfinite(aff)):
        raise InputError("affine contains NaN or infinite values", path)
    spacing = volume.spacing
    if np.any(spacing <= 1e-9):
        raise InputError(f"zero or negative voxel spacing {tuple(np.round(spacing, 6))}", path)
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12 * float(np.prod(spacing)):
        raise InputError("voxel-to-world affine is not invertible (degenerate directions)", path)
    n = int(np.prod(volume.spatial_shape))
    if n == 0:
        raise InputError(f"image is empty (shape {volume.data.shape})", path)
    if n > MAX_VOXELS:
        raise InputError(f"image has {n} voxels, more than the supported {MAX_VOXELS}; crop or downsample it", path)


def check_intensities(volume: Volume, path: str | None = None, *, allow_constant: bool = False) -> None:
    """Voxels must be finite; an intensity image must not be constant (nothing to register)."""
    path = path or volume.meta.get("path")
    data = volume.data
    if data.size == 0:
        raise InputError("image is empty", path)
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(f"image contains {bad} NaN or infinite voxels", path)
    if not allow_constant and not volume.is_label:
        lo, hi = np.min(data), np.max(data)
        if lo == hi:
            raise InputError(f"image is constant (every voxel = {lo}); nothing to register or segment", path)


def check_spatial_ndim(volume: Volume, expected: int | tuple[int, ...], path: str | None = None) -> None:
    expected = (expected,) if isinstance(expected, int) else tuple(expected)
    if volume.spatial_ndim not in expected:
        want = " or ".join(f"{e}D" for e in expected)
        raise InputError(f"expected a {want} image, got {volume.spatial_ndim}D (shape {volume.data.shape})",
                         path or volume.meta.get("path"))
