"""Bi/trilinear sampling in plain PyTorch ops (floor, gather, weights): differentiable twice w.r.t. image AND coords.

DIO's Jacobian-free backprop differentiates ∂L/∂u (which holds the backward of the warp) once more w.r.t. the
features. `F.grid_sample` only gained a double backward in recent PyTorch releases (2.13 has one); this gather
version needs nothing but autograd-able primitives, so it behaves the same on every device and version.

Same convention as `toporeg.transforms.sampling.sample`: voxel coordinates (B or 1, ndim, *out) in i, j(, k)
order, align_corners=True (coordinate n − 1 is the last voxel centre); padding "zeros" lets out-of-grid corners
contribute 0, "border" clamps the coordinates into [0, n − 1].
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch

from ..transforms.sampling import identity_grid

Padding = Literal["zeros", "border"]


def linear_sample(image: torch.Tensor, coords: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """Values of `image` (B, C, *in) at voxel coordinates `coords` (B or 1, ndim, *out) -> (B, C, *out)."""
    ndim = coords.shape[1]
    if image.dim() != ndim + 2:
        raise ValueError(f"image has {image.dim() - 2} spatial dims but coordinates have {ndim}")
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be 'zeros' or 'border', got {padding!r}")
    batch = max(image.shape[0], coords.shape[0])
    image = image.expand(batch, *image.shape[1:])
    coords = coords.to(image.dtype).expand(batch, *coords.shape[1:])
    in_shape = image.shape[2:]
    out_shape = coords.shape[2:]
    channels = image.shape[1]
    flat_image = image.reshape(batch, channels, -1)
    axes = []
    for a in range(ndim):
        x = coords[:, a].reshape(batch, -1)
        n = in_shape[a]
        if padding == "border":
            x = x.clamp(0, n - 1)
        lo = torch.floor(x.detach())
        frac = x - lo
        lo = lo.long()
        axes.append((lo, frac, n))
    out = None
    for corner in itertools.product((0, 1), repeat=ndim):
        index = torch.zeros_like(axes[0][0])
        weight = torch.ones_like(axes[0][1])
        valid = None
        for (lo, frac, n), offset in zip(axes, corner):
            idx = lo + offset
            weight = weight * (frac if offset else 1.0 - frac)
            inside = (idx >= 0) & (idx <= n - 1)
            valid = inside if valid is None else valid & inside
            index = index * n + idx.clamp(0, n - 1)
        weight = weight * valid.to(weight.dtype)
        values = torch.gather(flat_image, 2, index.unsqueeze(1).expand(batch, channels, index.shape[1]))
        term = values * weight.unsqueeze(1)
        out = term if out is None else out + term
    return out.reshape(batch, channels, *out_shape)


def linear_warp(image: torch.Tensor, displacement: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """image ∘ (id + u) for a voxel displacement (B or 1, ndim, *S) on the image's grid; twice differentiable."""
    if image.shape[2:] != displacement.shape[2:]:
        raise ValueError(f"image grid {tuple(image.shape[2:])} != displacement grid {tuple(displacement.shape[2:])}")
    grid = identity_grid(displacement.shape[2:], device=displacement.device, dtype=displacement.dtype)
    return linear_sample(image, grid + displacement, padding)
