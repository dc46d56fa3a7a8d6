"""Separable filters on (B, C, *spatial) tensors, 2D and 3D: Gaussian smoothing, box means, pyramids."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _conv_along(x: torch.Tensor, kernel: torch.Tensor, axis: int, mode: str = "replicate") -> torch.Tensor:
    """Convolve every channel of x with a 1D kernel along spatial `axis` (0-based)."""
    ndim = x.dim() - 2
    channels = x.shape[1]
    radius = kernel.numel() // 2
    shape = [1] * ndim
    shape[axis] = kernel.numel()
    weight = kernel.to(x).view(1, 1, *shape).expand(channels, 1, *shape)
    pad = [0] * (2 * ndim)
    pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
    if mode == "replicate" and any(radius >= n for n in x.shape[2:]):
        mode = "constant"
    padded = F.pad(x, pad, mode=mode)
    conv = F.conv2d if ndim == 2 else F.conv3d
    return conv(padded, weight, groups=channels)


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    radius = max(int(math.ceil(truncate * sigma)), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_smooth(x: torch.Tensor, sigma: float | list[float]) -> torch.Tensor:
    """Separable Gaussian blur with per-axis sigma in voxels (0 skips an axis); replicate borders."""
    ndim = x.dim() - 2
    sigmas = [float(sigma)] * ndim if not isinstance(sigma, (list, tuple)) else list(sigma)
    for axis, s in enumerate(sigmas):
        if s > 0:
            x = _conv_along(x, gaussian_kernel1d(s), axis)
    return x


def _box_mean_forward(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-padded box mean by running sums (O(1) per voxel whatever the window; ~3x faster than a
    depthwise convolution on the CPU)."""
    radius = window // 2
    ndim = x.dim() - 2
    for axis in range(ndim):
        dim = axis + 2
        n = x.shape[dim]
        pad = [0] * (2 * ndim)
        pad[2 * (ndim - 1 - axis)], pad[2 * (ndim - 1 - axis) + 1] = radius + 1, radius
        sums = F.pad(x, pad).cumsum(dim)
        x = (sums.narrow(dim, 2 * radius + 1, n) - sums.narrow(dim, 0, n)) / window
    return x


class _BoxMean(torch.autograd.Function):
    """A zero-padded box filter is self-adjoint, so its backward pass is the same cheap filter
    (autograd through cumsum/pad would allocate several full-size temporaries)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:  # noqa: ANN001
        ctx.window = window
        return _box_mean_forward(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001
        return _box_mean_forward(grad, ctx.window), None


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a window^d neighbourhood (zero-padded at the borders, as VoxelMorph's local NCC)."""
    return _BoxMean.apply(x, window)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Anti-aliased downsampling by an integer factor (Gaussian blur, then linear resize)."""
    if factor == 1:
        return x
    shape = [max(int(round(n / factor)), 2) for n in x.shape[2:]]
    blurred = gaussian_smooth(x, 0.5 * factor)
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(blurred, size=shape, mode=mode, align_corners=True)
