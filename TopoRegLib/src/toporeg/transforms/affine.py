"""Affine maps between grids: physical (RAS mm) ↔ voxel, and the dense coordinates they induce.

A physical affine T maps a fixed-space RAS point to the matching moving-space RAS point (the same
direction as φ). Its voxel form maps fixed voxel indices to moving voxel indices:
M_vox = A_moving⁻¹ · T · A_fixed.
"""

from __future__ import annotations

import numpy as np
import torch

from .sampling import identity_grid


def voxel_matrix(physical: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """4x4 map from fixed voxel indices to moving voxel indices for the RAS→RAS affine `physical`."""
    return np.linalg.inv(moving_affine) @ np.asarray(physical, float) @ fixed_affine


def physical_matrix(voxel: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """Inverse of `voxel_matrix`: the RAS→RAS affine for a fixed-voxel→moving-voxel map."""
    return moving_affine @ np.asarray(voxel, float) @ np.linalg.inv(fixed_affine)


def spatial_block(matrix4: np.ndarray, ndim: int) -> np.ndarray:
    """The (ndim+1)x(ndim+1) homogeneous block acting on the first `ndim` axes (2D: rows/cols i, j, 1)."""
    idx = list(range(ndim)) + [3]
    return np.asarray(matrix4, float)[np.ix_(idx, idx)]


def affine_coordinates(matrix: np.ndarray | torch.Tensor, shape: tuple[int, ...], *, device=None,
                       dtype=torch.float32) -> torch.Tensor:
    """(1, ndim, *shape) coordinates M·x for every voxel x; `matrix` is (ndim+1)² or 4x4."""
    ndim = len(shape)
    m = torch.as_tensor(matrix, device=device, dtype=dtype)
    if m.shape[-1] == 4 and ndim == 2:
        m = m[[0, 1, 3]][:, [0, 1, 3]]
    grid = identity_grid(shape, device=device, dtype=dtype)
    lin, trans = m[:ndim, :ndim], m[:ndim, ndim]
    return torch.einsum("rc,bc...->br...", lin, grid) + trans.view(1, ndim, *([1] * ndim))


def affine_displacement(matrix: np.ndarray | torch.Tensor, shape: tuple[int, ...], *, device=None,
                        dtype=torch.float32) -> torch.Tensor:
    """Voxel displacement field (1, ndim, *shape) of the same-grid voxel affine `matrix`."""
    coords = affine_coordinates(matrix, shape, device=device, dtype=dtype)
    return coords - identity_grid(shape, device=device, dtype=dtype)


def rotation_matrix(angles: np.ndarray | list[float]) -> np.ndarray:
    """3x3 rotation from Euler angles (radians) about the first, second and third axes, applied in that order."""
    ax, ay, az = (list(angles) + [0.0, 0.0, 0.0])[:3]
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
