"""Smoothness penalties on a field (B, ndim, *S) in voxel units."""

from __future__ import annotations

import torch


def _diff(x: torch.Tensor, axis: int) -> torch.Tensor:
    return x.diff(dim=axis + 2)


def diffusion(field: torch.Tensor) -> torch.Tensor:
    """Mean squared first derivative: Σ_axes mean(∂u/∂x_a)²."""
    ndim = field.dim() - 2
    return sum((_diff(field, a) ** 2).mean() for a in range(ndim))


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean squared second derivatives, mixed terms counted twice (thin-plate bending)."""
    ndim = field.dim() - 2
    total = field.new_zeros(())
    for a in range(ndim):
        da = _diff(field, a)
        for b in range(a, ndim):
            dab = _diff(da, b)
            total = total + (1.0 if a == b else 2.0) * (dab**2).mean()
    return total


REGULARIZERS = {"diffusion": diffusion, "bending": bending_energy}
