"""What makes a changed image into a benchmark pair: the `TopologyCase` record and the nuisance between the two
images (a random smooth diffeomorphic deformation, a random intensity change) with `deform`, which carries the
change mask along onto the fixed grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..training.templates import percentile_normalise_torch
from ..transforms.integration import integrate_svf
from ..transforms.sampling import resize_displacement, warp
from .synthetic_common import Range, Rng, _image, _norm, _range, _warp_mask, as_rng


@dataclass
class TopologyCase:
    """One benchmark pair on the fixed grid. `displacement`: the true fixed→moving voxel mapping outside the change
    (nuisance deformation composed with any mass effect), for displacement-error rows."""

    fixed: torch.Tensor
    moving: torch.Tensor
    change_mask: torch.Tensor
    brain_mask: torch.Tensor | None = None
    kind: str = ""
    meta: dict = field(default_factory=dict)
    displacement: torch.Tensor | None = None


def random_smooth_deformation(shape: Sequence[int], rng: Rng, max_displacement: float = 3.0, *,
                              spacing: float = 16.0, steps: int = 5) -> torch.Tensor:
    """(1, D, *S) diffeomorphic voxel displacement exp(v), v smooth noise (control points every `spacing` voxels)
    scaled to max |v| = max_displacement, which bounds max |u| closely for smooth fields."""
    rng = as_rng(rng)
    shape = tuple(int(n) for n in shape)
    if max_displacement <= 0:
        return torch.zeros((1, len(shape), *shape), device=rng.device)
    half = tuple(max(n // 2, 2) for n in shape)  # integrated at half resolution, as RandomFields.diffeomorphism
    scale = (half[0] - 1) / max(shape[0] - 1, 1)
    v = rng.smooth_noise(1, len(shape), half, max(spacing * scale, 1.0))
    v = v * (max_displacement * scale / _norm(v).max().clamp_min(1e-12))
    return resize_displacement(integrate_svf(v, steps), shape)


def random_intensity_change(image: torch.Tensor, rng: Rng, *, gamma_std: float = 0.15, bias: float = 0.2,
                            noise: Range = (0.0, 0.03), normalise: bool = True) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field, Gaussian noise on the foreground (> 0), then the percentile
    normalisation of inference (as `TemplateAugmenter` does for training images)."""
    rng = as_rng(rng)
    img = _image(image, rng.device)
    shape = tuple(img.shape[2:])
    img = img.clamp(0, 1) ** math.exp(float(rng.randn(())) * gamma_std)
    if bias > 0:
        img = img * torch.exp(rng.smooth_noise(1, 1, shape, max(shape) / 4.0) * rng.scalar(0.0, bias))
    img = img + rng.randn(img.shape) * rng.scalar(*_range(noise)) * (img > 0)
    return percentile_normalise_torch(img) if normalise else img


def deform(image: torch.Tensor, mask: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image∘(id + u), mask∘(id + u) by linear warp > 0.5): a changed image and its mask onto the fixed grid."""
    if not bool(displacement.any()):
        return image, mask
    return warp(image, displacement, padding="border"), _warp_mask(mask, displacement)
