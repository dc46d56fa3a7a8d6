"""Displacement fields in physical space and in files (ITK convention).

A registration's mapping is carried as `moving_coords`: for every fixed voxel x, the moving-grid voxel
coordinate φ(x) it corresponds to. From it, the physical displacement on the fixed grid is
u(x) = A_moving·φ(x) − A_fixed·x (RAS mm), written to files in LPS mm as a vector image on the fixed
grid, so that ITK / ANTs / Slicer resample the moving image with x_moving = x_fixed + u(x_fixed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from .sampling import identity_grid

if TYPE_CHECKING:  # imported lazily: `toporeg.transforms` stays torch/numpy-only (no SimpleITK/nibabel)
    from ..io.volume import Volume

RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def _ras_points(coords: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(ndim, *S) voxel coordinates → (*S, 3) RAS points (missing k taken as 0 for 2D)."""
    ndim = coords.shape[0]
    pts = np.moveaxis(coords, 0, -1).astype(np.float64)
    return pts @ affine[:3, :ndim].T + affine[:3, 3]


def physical_displacement(moving_coords: np.ndarray | torch.Tensor, fixed_affine: np.ndarray,
                          moving_affine: np.ndarray) -> np.ndarray:
    """(*S, 3) RAS-mm displacement u(x) = A_moving·φ(x) − A_fixed·x on the fixed grid."""
    coords = moving_coords.detach().cpu().numpy() if isinstance(moving_coords, torch.Tensor) else moving_coords
    if coords.ndim == coords.shape[1] + 2:  # batched (1, ndim, *S)
        coords = coords[0]
    shape = coords.shape[1:]
    ident = identity_grid(shape, dtype=torch.float64)[0].numpy()
    return _ras_points(coords, moving_affine) - _ras_points(ident, fixed_affine)


def moving_coordinates(u_ras: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray,
                       ndim: int) -> np.ndarray:
    """Inverse of `physical_displacement`: (ndim, *S) moving voxel coordinates from a RAS-mm field."""
    shape = u_ras.shape[:-1]
    ident = identity_grid(shape, dtype=torch.float64)[0].numpy()
    pts = _ras_points(ident, fixed_affine) + u_ras
    inv = np.linalg.inv(moving_affine)
    vox = pts @ inv[:3, :3].T + inv[:3, 3]
    return np.moveaxis(vox[..., :ndim], -1, 0)


def voxel_displacement_from_physical(u_ras: np.ndarray, affine: np.ndarray, ndim: int) -> np.ndarray:
    """(ndim, *S) same-grid voxel displacement for a RAS-mm field on that grid."""
    return moving_coordinates(u_ras, affine, affine, ndim) - identity_grid(u_ras.shape[:-1], dtype=torch.float64)[0].numpy()


def itk_displacement_volume(u_ras: np.ndarray, fixed: Volume) -> Volume:
    """The field as an ITK displacement-field image: LPS-mm vectors on the fixed grid (float32)."""
    from ..io.volume import Volume

    ndim = fixed.spatial_ndim
    grid = fixed.grid_shape
    if tuple(u_ras.shape[:-1]) != tuple(grid):
        raise InputError(f"displacement grid {u_ras.shape[:-1]} does not match the fixed grid {grid}")
    u_lps = (u_ras * RAS_TO_LPS)[..., :ndim].astype(np.float32)
    if ndim == 2 and len(fixed.spatial_shape) == 3:
        u_lps = u_lps[:, :, None, :]
    return Volume(u_lps, fixed.affine, has_channels=True, meta={"kind": "displacement", "space": "LPS"})


def physical_from_itk_volume(field: Volume) -> np.ndarray:
    """(*S, 3) RAS-mm displacement from an ITK displacement-field image (LPS-mm vectors)."""
    if not field.has_channels or field.n_channels not in (2, 3):
        raise InputError("not a displacement field: expected a 2- or 3-component vector image",
                         field.meta.get("path"))
    data = field.data.astype(np.float64)
    ndim = field.n_channels
    data = data.reshape(field.grid_shape + (ndim,))
    u = np.zeros(field.grid_shape + (3,))
    u[..., :ndim] = data
    return u * RAS_TO_LPS
