"""The Neuralizer network (Czolbe & Dalca 2023, Sec. 3.3): one model, any task, defined by a context set.

A target x (3 channels, zero-padded) and N context pairs (x_i, y_i) are embedded by 1×1 convolutions (e_x on x,
e_C on cat(x_i, y_i)) to a constant width c, then pass through Pairwise-Conv-Avg blocks arranged as a U-Net
(`levels` encoder blocks with 2× average pooling between them, `levels − 1` decoder blocks after 2× upsampling and
concatenation with the encoder's skip features: 2·levels − 1 blocks, 7 for the paper's 4 stages). A final residual
unit and 1×1 convolution give one output channel. Every operation on the context set is either shared across its
members or a mean over them, so the output is invariant to the order and defined for any size N ≥ 1.

Output semantics: one channel in the units of the context outputs y_i (masks ≈ 0/1, images ≈ [0, 1]). Segmentation
probabilities are `segment_probability(y)`, a sigmoid centred on 0.5, so that one head serves both kinds of task.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SEG_GAIN = 6.0  # slope of the sigmoid that turns the raw output into a mask probability (0.5 ↦ 0.5)


def segment_probability(y: torch.Tensor) -> torch.Tensor:
    """Mask probability from the raw output (≈ 0 background, ≈ 1 foreground)."""
    return torch.sigmoid(SEG_GAIN * (y - 0.5))


class ResidualUnit(nn.Module):
    """Two 3×3 convolutions with GELU and a shortcut (1×1 projection when the width changes)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class PairwiseConvAvg(nn.Module):
    """r_x ← ResUnit_x(r_x) + mean_i k_x * cat(·, r_Ci);  r_Ci ← ResUnit_C(r_Ci) + k_C * cat(r_x, ·).

    Context tensors are (B, N, C, H, W); the shared context residual unit runs on all B·N members at once.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.unit_x = ResidualUnit(c_in, c_out)
        self.unit_c = ResidualUnit(c_in, c_out)
        self.k_x = nn.Conv2d(2 * c_out, c_out, 1)
        self.k_c = nn.Conv2d(2 * c_out, c_out, 1)

    def forward(self, r_x: torch.Tensor, r_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = r_c.shape[:2]
        x_int = self.unit_x(r_x)
        c_int = self.unit_c(r_c.flatten(0, 1))
        pairs = torch.cat([x_int.repeat_interleave(n, dim=0), c_int], dim=1)
        x_out = x_int + self.k_x(pairs).unflatten(0, (b, n)).mean(dim=1)
        c_out = c_int + self.k_c(pairs)
        return x_out, c_out.unflatten(0, (b, n))


def _pool(r: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(r.flatten(0, 1), 2).unflatten(0, r.shape[:2]) if r.dim() == 5 else F.avg_pool2d(r, 2)


def _up(r: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if r.dim() == 5:
        return F.interpolate(r.flatten(0, 1), size=size, mode="bilinear", align_corners=False).unflatten(0, r.shape[:2])
    return F.interpolate(r, size=size, mode="bilinear", align_corners=False)


class Neuralizer(nn.Module):
    """g(x, C) → y. Inputs (B, in_channels, H, W), context (B, N, in_channels, H, W) and (B, N, 1, H, W);
    H and W multiples of `divisor` (= 2^(levels − 1))."""

    kind = "neuralizer"

    def __init__(self, channels: int = 32, levels: int = 4, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        if levels < 1:
            raise ValueError("levels must be ≥ 1")
        self.in_channels, self.out_channels, self.levels = in_channels, out_channels, levels
        self.config = dict(channels=channels, levels=levels, in_channels=in_channels, out_channels=out_channels)
        self.embed_x = nn.Conv2d(in_channels, channels, 1)
        self.embed_c = nn.Conv2d(in_channels + out_channels, channels, 1)
        self.down = nn.ModuleList(PairwiseConvAvg(channels, channels) for _ in range(levels))
        self.up = nn.ModuleList(PairwiseConvAvg(2 * channels, channels) for _ in range(levels - 1))
        self.final = ResidualUnit(channels, channels)
        self.out = nn.Conv2d(channels, out_channels, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, target: torch.Tensor, context_in: torch.Tensor, context_out: torch.Tensor) -> torch.Tensor:
        self._check(target, context_in, context_out)
        b, n = context_in.shape[:2]
        r_x = self.embed_x(target)
        r_c = self.embed_c(torch.cat([context_in, context_out], dim=2).flatten(0, 1)).unflatten(0, (b, n))
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for level, block in enumerate(self.down):
            if level:
                r_x, r_c = _pool(r_x), _pool(r_c)
            r_x, r_c = block(r_x, r_c)
            skips.append((r_x, r_c))
        for block, (s_x, s_c) in zip(self.up, reversed(skips[:-1])):
            size = s_x.shape[-2:]
            r_x = torch.cat([_up(r_x, size), s_x], dim=1)
            r_c = torch.cat([_up(r_c, size), s_c], dim=2)
            r_x, r_c = block(r_x, r_c)
        return self.out(self.final(r_x))

    def _check(self, target: torch.Tensor, context_in: torch.Tensor, context_out: torch.Tensor) -> None:
        if target.dim() != 4 or context_in.dim() != 5 or context_out.dim() != 5:
            raise ValueError("expected target (B, C, H, W), context_in (B, N, C, H, W), context_out (B, N, 1, H, W); "
                             f"got {tuple(target.shape)}, {tuple(context_in.shape)}, {tuple(context_out.shape)}")
        if context_in.shape[1] < 1:
            raise ValueError("the context set is empty: give at least one (image, output) pair")
        if target.shape[1] != self.in_channels or context_in.shape[2] != self.in_channels \
                or context_out.shape[2] != self.out_channels:
            raise ValueError(f"expected {self.in_channels} input and {self.out_channels} output channels")
        size = target.shape[-2:]
        if context_in.shape[-2:] != size or context_out.shape[-2:] != size or context_in.shape[0] != target.shape[0]:
            raise ValueError("target and context slices must share batch size and spatial size")
        if any(s % self.divisor for s in size):
            raise ValueError(f"slice size {tuple(size)} must be a multiple of {self.divisor} (pad it)")
