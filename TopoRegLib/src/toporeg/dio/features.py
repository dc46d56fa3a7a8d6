"""DIO's feature network: one shared small U-Net applied to each image on its own, with a single convolution head
on the decoder at every scale (Jena et al., A.3), so features can be cached per image (an atlas once, many subjects).

Level grids: for a downsampling factor s, an axis of n voxels becomes `level_shape(n, s)` = max(round(n / s), 2)
voxels that span the same extent corner to corner (voxel 0 and the last voxel of every level sit on the first
and last full-resolution voxel centres). This is the grid `filters.downsample` and `resize_displacement` use, so
coarse displacements, downsampled images and features line up exactly. The network pads the input at the far
end to a multiple of 2^len(encoder), runs, and samples each head's output at those level-grid positions
(s = 1: a crop), so any input size works.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.unet import UNet, conv_nd
from ..transforms.sampling import identity_grid, sample


def level_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The grid of a 1/`factor` level (the same rule as `filters.downsample`)."""
    return tuple(max(int(round(int(n) / factor)), 2) if factor > 1 else int(n) for n in shape)


def standardized(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel to zero mean and unit variance over the image. Training through the solver's optimum (JFB)
    otherwise rewards shrinking the features, which quiets the phantom step until the solver no longer moves
    (seen on CPU runs: validation Dice fell to the unregistered value); with fixed statistics it cannot."""
    dims = tuple(range(2, features.dim()))
    mean = features.mean(dims, keepdim=True)
    std = features.var(dims, keepdim=True, unbiased=False).add(eps).sqrt()
    return (features - mean) / std


class DIOFeatureNet(nn.Module):
    """Image (B, 1, *S) -> list of (B, `channels`, *level_shape(S, s)) feature maps, coarse -> fine (`scales`)."""

    architecture = "DIOFeatureNet"

    def __init__(self, ndim: int = 2, channels: int = 16, encoder: Sequence[int] = (16, 32, 64),
                 decoder: Sequence[int] | None = (32, 32, 16), final_convs: Sequence[int] = (16,),
                 scales: Sequence[int] = (4, 2, 1), in_channels: int = 1, standardize: bool = True):
        super().__init__()
        scales = [int(s) for s in scales]
        levels = len(encoder)
        allowed = [2**lvl for lvl in range(levels)]
        if not scales or any(s not in allowed for s in scales) or scales != sorted(set(scales), reverse=True):
            raise ValueError(f"scales must be distinct, decreasing and among {allowed[::-1]} for a "
                             f"{levels}-stage encoder, got {scales}")
        self.config = {"ndim": ndim, "channels": channels, "encoder": list(encoder),
                       "decoder": None if decoder is None else list(decoder), "final_convs": list(final_convs),
                       "scales": scales, "in_channels": in_channels, "standardize": standardize}
        self.ndim, self.scales, self.channels, self.standardize = ndim, scales, channels, standardize
        self.unet = UNet(ndim, in_channels, encoder, decoder, final_convs)
        conv = conv_nd(ndim)
        # channels available at each level after the decoder's upsample + skip concat (level 0 after `final`)
        skip_channels = [in_channels] + list(encoder[:-1])
        decoder_channels = list(reversed(encoder)) if decoder is None else list(decoder)
        available = {levels - 1 - i: c + skip_channels[levels - 1 - i] for i, c in enumerate(decoder_channels)}
        available[0] = self.unet.out_channels
        self.heads = nn.ModuleList(conv(available[s.bit_length() - 1], channels, 3, padding=1) for s in scales)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        shape = tuple(image.shape[2:])
        multiple = 2**self.unet.levels
        pad = [(-n) % multiple for n in shape]
        x = F.pad(image, [p for n in reversed(pad) for p in (0, n)]) if any(pad) else image
        maps = self._decoder_levels(x)
        out = []
        for scale, head in zip(self.scales, self.heads):
            level = scale.bit_length() - 1
            feats = self._to_level_grid(head(maps[level]), shape, scale)
            out.append(standardized(feats) if self.standardize else feats)
        return out

    def _decoder_levels(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """{level: decoder tensor} for the levels with a head: `UNet.forward`'s loop, keeping its intermediates."""
        unet = self.unet
        feats = [x] + unet.encode(x)
        y = feats[-1]
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        maps: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(unet.decoder):
            skip = feats[unet.levels - i - 1]
            y = F.interpolate(stage(y), size=skip.shape[2:], mode=mode, align_corners=False)
            y = torch.cat([y, skip], dim=1)
            maps[unet.levels - i - 1] = y
        maps[0] = unet.final(maps[0])
        return maps

    @staticmethod
    def _to_level_grid(features: torch.Tensor, shape: tuple[int, ...], scale: int) -> torch.Tensor:
        """Level-s network output (voxel j at full-resolution position s·j) -> the corner-aligned level grid."""
        if scale == 1:
            return features[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)]
        target = level_shape(shape, scale)
        step = torch.tensor([(n - 1) / (m - 1) / scale for n, m in zip(shape, target)],
                            device=features.device, dtype=features.dtype)
        grid = identity_grid(target, device=features.device, dtype=features.dtype)
        coords = grid * step.view(1, -1, *[1] * len(shape))
        return sample(features, coords, padding="border")
