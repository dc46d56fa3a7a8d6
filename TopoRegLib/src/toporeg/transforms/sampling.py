"""Sampling images at voxel coordinates and warping by displacement fields (torch, 2D/3D, batched).

Tensors are (B, C, *spatial) with spatial in i, j(, k) order; coordinates and displacements have one
channel per spatial axis, in voxels. The only translation to `grid_sample`'s normalised, reversed
(x, y, z) order happens in `_to_grid`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

Interp = Literal["linear", "nearest"]
Padding = Literal["zeros", "border"]


def identity_grid(shape: tuple[int, ...] | torch.Size, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, ndim, *shape) tensor whose channel c holds each voxel's index along axis c.

    Cached per (shape, device, dtype): treat the result as read-only.
    """
    return _identity_grid(tuple(int(n) for n in shape), torch.device(device or "cpu"), dtype)


@lru_cache(maxsize=16)
def _identity_grid(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


@lru_cache(maxsize=16)
def _normalised_identity(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The identity as a grid_sample grid (1, *shape, ndim)."""
    return _to_grid(_identity_grid(shape, device, dtype), shape)


def _scale(shape: tuple[int, ...], ndim: int, device, dtype) -> torch.Tensor:
    return torch.tensor([2.0 / max(n - 1, 1) for n in shape], device=device, dtype=dtype).view(1, ndim, *([1] * ndim))


def _to_grid(coords: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel coordinates (B, ndim, *out) -> grid_sample grid (B, *out, ndim) in reversed, [-1, 1] order."""
    ndim = coords.shape[1]
    norm = coords * _scale(in_shape, ndim, coords.device, coords.dtype) - 1.0
    return norm.permute(0, *range(2, ndim + 2), 1).flip(-1)


def sample(image: torch.Tensor, coords: torch.Tensor, *, mode: Interp = "linear",
           padding: Padding = "zeros") -> torch.Tensor:
    """Values of `image` (B, C, *in) at voxel coordinates `coords` (B or 1, ndim, *out)."""
    ndim = coords.shape[1]
    if image.dim() != ndim + 2:
        raise ValueError(f"image has {image.dim() - 2} spatial dims but coordinates have {ndim}")
    if coords.shape[0] != image.shape[0]:
        coords = coords.expand(image.shape[0], *coords.shape[1:])
    grid = _to_grid(coords.to(image.dtype), tuple(image.shape[2:]))
    gs_mode = "bilinear" if mode == "linear" else "nearest"
    return F.grid_sample(image, grid, mode=gs_mode, padding_mode=padding, align_corners=True)


def warp(image: torch.Tensor, displacement: torch.Tensor, *, mode: Interp = "linear",
         padding: Padding = "zeros") -> torch.Tensor:
    """image ∘ (id + u): pull-back warp of `image` by a voxel displacement on the same grid."""
    if image.shape[2:] != displacement.shape[2:]:
        raise ValueError(f"image grid {tuple(image.shape[2:])} != displacement grid {tuple(displacement.shape[2:])}")
    shape = tuple(displacement.shape[2:])
    ndim = len(shape)
    disp = displacement.to(image.dtype)
    offset = (disp * _scale(shape, ndim, disp.device, disp.dtype)).permute(0, *range(2, ndim + 2), 1).flip(-1)
    grid = _normalised_identity(shape, disp.device, disp.dtype) + offset
    if grid.shape[0] != image.shape[0]:
        grid = grid.expand(image.shape[0], *grid.shape[1:])
    gs_mode = "bilinear" if mode == "linear" else "nearest"
    return F.grid_sample(image, grid, mode=gs_mode, padding_mode=padding, align_corners=True)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of an integer label map (B, 1, *S); keeps the dtype."""
    warped = warp(labels.to(displacement.dtype), displacement, mode="nearest")
    return warped.round().to(labels.dtype)


def resize_displacement(displacement: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a voxel displacement to another grid covering the same extent, rescaling its values."""
    in_shape = displacement.shape[2:]
    if tuple(in_shape) == tuple(shape):
        return displacement
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = F.interpolate(displacement, size=tuple(shape), mode=mode, align_corners=True)
    factors = [(n_out - 1) / max(n_in - 1, 1) for n_in, n_out in zip(in_shape, shape)]
    scale = torch.tensor(factors, device=out.device, dtype=out.dtype).view(1, -1, *([1] * len(shape)))
    return out * scale
