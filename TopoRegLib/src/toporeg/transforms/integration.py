"""Stationary velocity fields: scaling-and-squaring integration, composition and the exact SVF inverse."""

from __future__ import annotations

import torch

from .sampling import warp


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Displacement of φ_outer ∘ φ_inner: x ↦ x + inner(x) + outer(x + inner(x)) (voxels, same grid)."""
    return inner + warp(outer, inner, padding="border")


def integrate_svf(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """exp(v) by scaling and squaring: u = v / 2^T, then T times u ← u ∘ u. Diffeomorphic for smooth v."""
    if steps < 0:
        raise ValueError("steps must be >= 0")
    disp = velocity / (2.0**steps)
    for _ in range(steps):
        disp = compose(disp, disp)
    return disp


def invert_svf(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """exp(−v): the inverse mapping of exp(v)."""
    return integrate_svf(-velocity, steps)


def invert_displacement(displacement: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Inverse of x ↦ x + u(x) by fixed-point iteration w(y) = −u(y + w(y)); exact for translations, converges
    where the mapping is invertible and |∇u| < 1 (free-form displacements that have no SVF to negate)."""
    inverse = -displacement
    for _ in range(iterations):
        inverse = -warp(displacement, inverse, padding="border")
    return inverse
