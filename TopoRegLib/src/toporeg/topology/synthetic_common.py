"""Shared primitives of the synthetic topological changes (`toporeg.topology.synthetic`): the seeded RNG, tensor
coercion, binary masks (dilation, erosion, warping) and irregular blobs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..training.synth import RandomFields
from ..transforms.sampling import identity_grid, warp

Rng = RandomFields | int
Range = float | tuple[float, float]


def as_rng(rng: Rng) -> RandomFields:
    """An int seeds a fresh CPU `RandomFields`; a `RandomFields` is used (and advanced) as is."""
    return rng if isinstance(rng, RandomFields) else RandomFields(int(rng))


def _image(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 1, *S) float32 from (*S) or (1, 1, *S), numpy or torch."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device, torch.float32)
    return t[None, None] if t.dim() in (2, 3) else t


def _mask(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return _image(x, device) > 0


def _range(value: Range) -> tuple[float, float]:
    return (float(value), float(value)) if np.isscalar(value) else (float(value[0]), float(value[1]))


def _chance(rng: RandomFields, p: float) -> bool:
    return rng.scalar(0.0, 1.0) < p


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2r+1)^d box (max pooling); r = 0 is the identity."""
    if radius <= 0:
        return mask
    pool = F.max_pool2d if mask.dim() == 4 else F.max_pool3d
    return pool(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return ~dilate(~mask, radius)


def _warp_mask(mask: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """mask∘(id + u) by a linear warp thresholded at 0.5 (untouched when u = 0)."""
    return warp(mask.float(), displacement) > 0.5 if bool(displacement.any()) else mask


def _norm(field: torch.Tensor) -> torch.Tensor:
    """(1, 1, *S) Euclidean norm over channels (faster than Tensor.norm(dim=1) on large grids)."""
    return (field**2).sum(1, keepdim=True).sqrt()


def _random_voxel(candidates: torch.Tensor, rng: RandomFields, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """(ndim,) float index of a uniformly drawn voxel of `candidates` (or of `fallback` when that is empty)."""
    idx = candidates[0, 0].nonzero()
    if len(idx) == 0 and fallback is not None:
        idx = fallback[0, 0].nonzero()
    if len(idx) == 0:
        raise ValueError("no voxel to place the change in (empty mask)")
    return idx[int(rng.randint(0, len(idx), ()))].float()


def random_blob(shape: Sequence[int], centre: torch.Tensor, radius: float, rng: Rng,
                irregularity: float = 0.3) -> torch.Tensor:
    """(1, 1, *shape) bool irregular blob: |x − c| / r < 1 − irregularity·n(x), n smooth noise clipped to ±2.5.

    The clip keeps the centre inside for irregularity < 0.4, so a blob is never empty."""
    rng = as_rng(rng)
    grid = identity_grid(tuple(shape), device=rng.device)
    dist = _norm(grid - centre.to(rng.device).view(1, -1, *([1] * len(shape)))) / radius
    noise = rng.smooth_noise(1, 1, tuple(shape), max(0.8 * radius, 2.0)).clamp(-2.5, 2.5)
    return dist < 1.0 - irregularity * noise


def _texture(shape: Sequence[int], rng: RandomFields, amplitude: float, spacing: float = 3.0) -> torch.Tensor:
    return amplitude * rng.smooth_noise(1, 1, tuple(shape), spacing)
