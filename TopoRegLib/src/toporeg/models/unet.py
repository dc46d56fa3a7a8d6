"""One small, configurable 2D/3D U-Net shared by the registration networks and the DeepSim extractors.

Levels: level 0 is the input resolution, level l is 1/2^l. Encoder stage l (l = 1..L) is
[BatchNorm] → Conv(`down_kernel`, stride 2) → LeakyReLU(0.2) → (`convs_per_stage` − 1) × [Conv3 → LeakyReLU]
→ [channel dropout]; its output is the level-l feature map (DeepSim's layers are these stage outputs).
Decoder stage (level l → l − 1): (`convs_per_stage` × [Conv3 → LeakyReLU]) → [dropout] → ×2 linear upsample
→ concat with the level l − 1 skip (the input at level 0) unless `skips=False` (autoencoder). The decoder
stops at `output_level` (1 for VoxelMorph-diff's half-resolution velocity), then `final_convs` Conv3 +
LeakyReLU layers follow. Heads (flow, segmentation, reconstruction) belong to the models that use it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_nd(ndim: int):
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class UNet(nn.Module):
    """Encoder/decoder with skip connections; `encode` gives the per-stage encoder features."""

    def __init__(self, ndim: int = 3, in_channels: int = 2, encoder: Sequence[int] = (16, 32, 32, 32),
                 decoder: Sequence[int] | None = None, final_convs: Sequence[int] = (), *, output_level: int = 0,
                 down_kernel: int = 3, convs_per_stage: int = 1, skips: bool = True, batch_norm: bool = False,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError("ndim must be 2 or 3")
        levels = len(encoder)
        if not 0 <= output_level < levels:
            raise ValueError(f"output_level must be in [0, {levels - 1}]")
        decoder = list(reversed(encoder))[: levels - output_level] if decoder is None else list(decoder)
        if len(decoder) != levels - output_level:
            raise ValueError(f"need {levels - output_level} decoder stages to go from level {levels} "
                             f"to level {output_level}, got {len(decoder)}")
        self.ndim, self.levels, self.output_level, self.skips = ndim, levels, output_level, skips
        conv = conv_nd(ndim)
        bn = nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d
        drop = nn.Dropout2d if ndim == 2 else nn.Dropout3d
        pad = (down_kernel - 1) // 2

        self.encoder = nn.ModuleList()
        c_in = in_channels
        for c in encoder:
            layers: list[nn.Module] = [bn(c_in)] if batch_norm else []
            layers += [conv(c_in, c, down_kernel, stride=2, padding=pad, bias=bias), _act()]
            for _ in range(convs_per_stage - 1):
                layers += [conv(c, c, 3, padding=1, bias=bias), _act()]
            if dropout > 0:
                layers.append(drop(dropout))
            self.encoder.append(nn.Sequential(*layers))
            c_in = c

        skip_channels = [in_channels] + list(encoder[:-1])  # what level l - 1 offers to concat
        self.decoder = nn.ModuleList()
        c_in = encoder[-1]
        for i, c in enumerate(decoder):
            level = levels - i
            layers = []
            for j in range(convs_per_stage):
                layers += [conv(c_in if j == 0 else c, c, 3, padding=1, bias=bias), _act()]
            if dropout > 0:
                layers.append(drop(dropout))
            self.decoder.append(nn.Sequential(*layers))
            c_in = c + (skip_channels[level - 1] if skips else 0)

        final: list[nn.Module] = []
        for c in final_convs:
            final += [conv(c_in, c, 3, padding=1, bias=bias), _act()]
            c_in = c
        self.final = nn.Sequential(*final)
        self.out_channels = c_in

    def check_shape(self, shape: Sequence[int]) -> None:
        factor = 2**self.levels
        if any(int(n) % factor for n in shape):
            raise ValueError(f"input grid {tuple(shape)} must be divisible by {factor} on every axis")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder stage outputs at levels 1..L (1/2, 1/4, …)."""
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_shape(x.shape[2:])
        feats = [x] + self.encode(x)
        y = feats[-1]
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for i, stage in enumerate(self.decoder):
            level = self.levels - i
            y = stage(y)
            skip = feats[level - 1]
            y = F.interpolate(y, size=skip.shape[2:], mode=mode, align_corners=False)
            if self.skips:
                y = torch.cat([y, skip], dim=1)
        return self.final(y)
