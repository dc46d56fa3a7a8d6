"""Resample a volume onto another volume's grid (optionally through a physical affine)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..io.volume import Volume
from ..transforms.affine import affine_coordinates, spatial_block, voxel_matrix
from ..transforms.sampling import sample
from .tensors import tensor_to_volume, volume_to_tensor


def resample_to(volume: Volume, reference: Volume, *, transform: np.ndarray | None = None,
                interpolation: Literal["linear", "nearest"] | None = None, fill: float = 0.0,
                device=None) -> Volume:
    """`volume` sampled at the points of `reference`'s grid.

    `transform` (4x4, RAS→RAS) maps a reference-space point to the point of `volume` to sample; identity
    when None. Labels use nearest neighbour unless told otherwise. Points outside get `fill`.
    """
    interpolation = interpolation or ("nearest" if volume.is_label else "linear")
    t = np.eye(4) if transform is None else np.asarray(transform, float)
    ndim = reference.spatial_ndim
    if volume.spatial_ndim != ndim:
        raise ValueError(f"cannot resample a {volume.spatial_ndim}D volume onto a {ndim}D grid")
    m = spatial_block(voxel_matrix(t, reference.affine, volume.affine), ndim)
    image = volume_to_tensor(volume, device=device, dtype=torch.float32)
    coords = affine_coordinates(m, reference.grid_shape, device=device)
    out = sample(image - fill, coords, mode=interpolation) + fill if fill else sample(image, coords, mode=interpolation)
    dtype = volume.data.dtype if volume.is_label else np.float32
    if volume.is_label:
        out = out.round()
    result = tensor_to_volume(out, reference, is_label=volume.is_label, dtype=dtype)
    result.meta = {k: v for k, v in volume.meta.items() if k not in ("path",)}
    return result


def resample_to_spacing(volume: Volume, spacing: float | tuple[float, ...], **kw) -> Volume:
    """The volume on a grid with the same orientation and extent but another voxel size."""
    ndim = volume.spatial_ndim
    new = np.broadcast_to(np.asarray(spacing, float), (3,)).copy()
    old = volume.spacing
    if ndim == 2:
        new[2] = old[2]
    extent = (np.array(volume.spatial_shape + (1,) * (3 - len(volume.spatial_shape))) - 1) * old
    shape = np.maximum(np.floor(extent / new + 1e-6).astype(int) + 1, 1)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.direction * new
    grid_shape = tuple(int(s) for s in shape[:ndim]) + ((1,) if len(volume.spatial_shape) == 3 and ndim == 2 else ())
    ref = Volume(np.zeros(grid_shape, np.uint8), affine)
    return resample_to(volume, ref, **kw)
