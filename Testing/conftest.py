"""Shared pytest fixtures: small synthetic volumes with oblique, anisotropic geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toporeg.io import Volume
from toporeg.transforms import rotation_matrix

torch.set_num_threads(2)


def oblique_affine(spacing=(1.2, 0.9, 2.0), angles=(0.3, -0.2, 0.5), origin=(-40.0, 25.0, 10.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation_matrix(angles) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def smooth_blobs(shape, seed=0, n=6) -> np.ndarray:
    """A smooth, structured test image (sum of Gaussian blobs) so warps have something to move."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        centre = [rng.uniform(0.2 * s, 0.8 * s) for s in shape]
        width = rng.uniform(0.08, 0.2) * min(shape)
        r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        img += rng.uniform(0.5, 1.5) * np.exp(-r2 / (2 * width**2))
    return img


def phantom(shape, seed=0) -> np.ndarray:
    """Blobs with soft but distinct edges in [0, 1]: local NCC needs structure, not only smooth ramps."""
    img = smooth_blobs(shape, seed=seed, n=12)
    levels = np.tanh(6.0 * (img / img.max() - 0.3)) + np.tanh(6.0 * (img / img.max() - 0.65))
    levels = levels - levels.min()
    return (levels / levels.max()).astype(np.float32)


def textured_phantom(shape, seed=0) -> np.ndarray:
    """`phantom` plus fine texture of realistic local contrast (MR images are never flat inside)."""
    from toporeg.filters import gaussian_smooth

    g = torch.Generator().manual_seed(seed)
    tex = gaussian_smooth(torch.randn((1, 1, *shape), generator=g), 1.0)[0, 0].numpy()
    return (phantom(shape, seed) + 0.6 * tex / np.abs(tex).max()).astype(np.float32)


@pytest.fixture
def oblique_volume() -> Volume:
    return Volume(smooth_blobs((20, 24, 16)), oblique_affine())


def smooth_velocity(shape, magnitude=2.0, seed=0, sigma=4.0) -> torch.Tensor:
    """(1, ndim, *shape) smooth random field with max |v| ≈ magnitude voxels."""
    gen = torch.Generator().manual_seed(seed)
    ndim = len(shape)
    noise = torch.randn((1, ndim, *shape), generator=gen)
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = k / k.sum()
    conv = torch.nn.functional.conv2d if ndim == 2 else torch.nn.functional.conv3d
    out = noise
    for axis in range(ndim):
        shape_k = [1] * ndim
        shape_k[axis] = k.numel()
        weight = k.view(1, 1, *shape_k).repeat(ndim, 1, *([1] * ndim))
        pad = [0] * (2 * ndim)
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
        out = conv(torch.nn.functional.pad(out, pad, mode="replicate"), weight, groups=ndim)
    return out * (magnitude / out.abs().max())


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: a second OpenMP thread only adds a scheduler tick per op on a loaded 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
