"""Image pyramids over the fixed grid: level shapes and the level-voxel → fixed-voxel scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..filters import downsample, gaussian_smooth


@dataclass(frozen=True)
class Level:
    factor: int
    shape: tuple[int, ...]
    scale: np.ndarray  # fixed voxel = scale ⊙ level voxel (align-corners convention)

    def to_fixed_voxels(self) -> np.ndarray:
        """(ndim+1)² homogeneous matrix level voxel → fixed voxel."""
        m = np.eye(len(self.shape) + 1)
        m[: len(self.shape), : len(self.shape)] = np.diag(self.scale)
        return m


def make_level(fixed_shape: tuple[int, ...], factor: int) -> Level:
    shape = tuple(max(int(round(n / factor)), 2) if factor > 1 else n for n in fixed_shape)
    scale = np.array([(n - 1) / max(m - 1, 1) for n, m in zip(fixed_shape, shape)])
    return Level(factor, shape, scale)


def level_image(image: torch.Tensor, level: Level) -> torch.Tensor:
    """The fixed-grid image on a level grid (anti-aliased)."""
    if level.factor == 1:
        return image
    out = downsample(image, level.factor)
    if tuple(out.shape[2:]) != level.shape:
        mode = "bilinear" if image.dim() == 4 else "trilinear"
        out = torch.nn.functional.interpolate(out, size=level.shape, mode=mode, align_corners=True)
    return out


def blur_for_sampling(image: torch.Tensor, sample_spacing_vox: np.ndarray) -> torch.Tensor:
    """Pre-blur an image that will be sampled at `sample_spacing_vox` of its own voxels (anti-aliasing)."""
    sigmas = [0.5 * float(s) if s > 1.25 else 0.0 for s in sample_spacing_vox]
    return gaussian_smooth(image, sigmas) if any(sigmas) else image
