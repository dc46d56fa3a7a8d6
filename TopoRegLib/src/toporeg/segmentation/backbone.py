"""The residual U-Net every segmentation model shares (Czolbe et al. IPMI 2021, Sec. 4.2), 2D or 3D.

Four encoder blocks (2× average pooling, then three conv-norm-activation layers with a residual shortcut) take a
full-resolution stem down to 1/16; four decoder blocks (2× linear upsampling, concatenation with the encoder
features of that level, three convolutions with a residual shortcut) come back up. The full-resolution stem and the
last decoder block use half of `channels[0]`: full resolution dominates the cost of a 3D network, and that keeps a
2 mm brain well inside the CPU time budget. `head` is the final stack of 1×1 convolutions; the probabilistic U-Net
concatenates its latent sample there (Kohl et al. 2018), so one backbone serves all four methods.

Dropout (MC-dropout) is channel-wise, in the decoder blocks only: the encoder can then be run once per image and only
the decoder once per Monte-Carlo sample. Its masks can come from a caller's `torch.Generator` and can be shared
across the batch, so that the slices of one volume, segmented in batches by a 2D model, form one coherent sample.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("batch", "instance")


def _conv(ndim: int, c_in: int, c_out: int, kernel: int = 3, bias: bool = False) -> nn.Module:
    cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    return cls(c_in, c_out, kernel, padding=kernel // 2, bias=bias)


def _norm(ndim: int, kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels)
    return (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(channels, affine=True)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def channel_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                    shared: bool = False) -> torch.Tensor:
    """Zero whole feature maps with probability p (rescaled by 1/(1-p)); `shared`: one mask for the whole batch."""
    shape = (1 if shared else x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    device = generator.device if generator is not None else x.device
    keep = torch.rand(shape, generator=generator, device=device).to(x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class ResidualConvs(nn.Module):
    """Three conv-norm-activation layers plus a shortcut (1×1 projection when the width changes)."""

    def __init__(self, ndim: int, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            _conv(ndim, c_in, c_out), _norm(ndim, norm, c_out), _act(),
            _conv(ndim, c_out, c_out), _norm(ndim, norm, c_out), _act(),
            _conv(ndim, c_out, c_out), _norm(ndim, norm, c_out))
        self.shortcut = nn.Identity() if c_in == c_out else _conv(ndim, c_in, c_out, 1)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResidualEncoder(nn.Module):
    """Stem at full resolution, then four down blocks; `forward` returns the features of every level (5 maps)."""

    def __init__(self, ndim: int, in_channels: int, channels: Sequence[int], norm: str = "batch"):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError("ndim must be 2 or 3")
        if len(channels) != 4:
            raise ValueError(f"the backbone has four levels: give four channel widths, not {len(channels)}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")
        self.ndim = ndim
        self.stem_channels = max(int(channels[0]) // 2, 1)
        self.stem = nn.Sequential(_conv(ndim, in_channels, self.stem_channels), _norm(ndim, norm, self.stem_channels),
                                  _act())
        self.pool = nn.AvgPool2d(2) if ndim == 2 else nn.AvgPool3d(2)
        widths = [self.stem_channels, *[int(c) for c in channels]]
        self.blocks = nn.ModuleList(ResidualConvs(ndim, a, b, norm) for a, b in zip(widths[:-1], widths[1:]))
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for block in self.blocks:
            feats.append(block(self.pool(feats[-1])))
        return feats


class ResidualUNet(nn.Module):
    """Four-level residual U-Net; `features` → last decoder map, `head(features, z)` → logits."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, channels: Sequence[int] = (16, 32, 64, 128),
                 dropout: float = 0.0, latent_channels: int = 0, norm: str = "batch"):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        self.ndim, self.dropout, self.latent_channels = ndim, float(dropout), int(latent_channels)
        self.encoder = ResidualEncoder(ndim, in_channels, channels, norm)
        widths = self.encoder.widths  # [stem, c0, c1, c2, c3]
        self.decoder = nn.ModuleList(
            ResidualConvs(ndim, widths[level + 1] + widths[level], widths[level], norm) for level in (3, 2, 1, 0))
        self.feature_channels = widths[0]
        c = widths[0] + self.latent_channels
        self.final = nn.Sequential(_conv(ndim, c, c, 1, bias=True), _act(), _conv(ndim, c, c, 1, bias=True), _act(),
                                   _conv(ndim, c, out_channels, 1, bias=True))

    def check_shape(self, shape: Sequence[int]) -> None:
        if len(shape) != self.ndim or any(int(n) % 16 for n in shape):
            raise ValueError(f"a {self.ndim}D input grid must be a multiple of 16 on every axis, got {tuple(shape)}")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of every level; deterministic (no dropout), so MC sampling computes them once."""
        self.check_shape(x.shape[2:])
        return self.encoder(x)

    def decode(self, feats: list[torch.Tensor], *, stochastic: bool | None = None,
               generator: torch.Generator | None = None, shared_noise: bool = False) -> torch.Tensor:
        """Decoder; dropout is on when `stochastic` (default: in training mode)."""
        drop = self.dropout > 0 and (self.training if stochastic is None else stochastic)
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        y = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[2:], mode=mode, align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
            if drop:
                y = channel_dropout(y, self.dropout, generator, shared_noise)
        return y

    def features(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """The last decoder feature map (full resolution); keywords as in `decode`."""
        return self.decode(self.encode(x), **kw)

    def head(self, features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the final 1×1 convolutions; `z` (B, latent) is broadcast over space and concatenated first."""
        return self.head_from(self.head_features(features), z)

    def head_features(self, features: torch.Tensor) -> torch.Tensor:
        """The image part of the first 1×1 convolution. A latent is constant over space, so its part is a bias:
        computing this once serves every latent sample (the first layer is not recomputed per sample)."""
        conv = self.final[0]
        weight = conv.weight[:, : self.feature_channels]
        return (F.conv2d if self.ndim == 2 else F.conv3d)(features, weight, conv.bias)

    def head_from(self, pre: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from `head_features` output and the latent z; equal to `head(features, z)`."""
        if self.latent_channels:
            if z is None or z.shape[-1] != self.latent_channels:
                raise ValueError(f"this backbone needs a latent z of size {self.latent_channels}")
            w_z = self.final[0].weight[:, self.feature_channels:].flatten(1)  # (out, latent)
            pre = pre + (z.to(pre.dtype) @ w_z.T).reshape(z.shape[0], -1, *([1] * self.ndim))
        elif z is not None:
            raise ValueError("this backbone takes no latent z")
        return self.final[1:](pre)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), z)
