"""CARL = TwoStep{ Down{ TwoStep{ Down{Ξ}, Ψ1 } }, Ψ2 } (Greer et al., seed B.2/B.3), in voxel units.

Every step maps (moving, fixed) images (B, 1, *S) on one grid to a displacement u (B, ndim, *S) in voxels of
that grid, x_moving = x + u(x) (CONVENTIONS.md). Steps:
- Ξ (`CoordinateAttentionStep`): coordinate attention on translation-equivariant features; [W,U]-equivariant
  to integer translations, so it can recover offsets far larger than its receptive field.
- Ψ (`DisplacementStep`): a U-Net predicting a displacement from cat(moving∘φ, fixed); [U,U]-equivariant only,
  refines what Ξ found; its last conv starts at zero, so an untrained Ψ is the identity.
- `Down{Φ}` runs Φ on 2×2(×2)-average-pooled images; `TwoStep{Φ,Ψ}` = φ ∘ ψ with ψ = Ψ[M∘φ, F].
The depth argument truncates the chain after that many steps (1 = Ξ only, 2 = Ξ + Ψ1, 3 = all).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.unet import UNet, conv_nd
from ..transforms.integration import compose
from ..transforms.sampling import identity_grid, warp
from .attention import coordinate_attention
from .encoder import EquivariantEncoder


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad every spatial axis at its high end to a multiple of `multiple` (voxel coordinates unchanged)."""
    pads: list[int] = []
    for n in reversed(x.shape[2:]):
        pads += [0, (-n) % multiple]
    return F.pad(x, pads) if any(pads) else x


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x[(slice(None), slice(None)) + tuple(slice(0, int(n)) for n in shape)]


def upsample_displacement(displacement: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A displacement on the 2×-average-pooled grid, brought to the fine grid `shape` (voxels rescaled).

    Average pooling by 2 puts coarse voxel c at fine coordinate 2c + ½, so u_fine(x) = 2·u_coarse((x − ½)/2):
    exactly what linear upsampling with align_corners=False does. (`resize_displacement` maps corner voxels
    onto corner voxels, a factor (n−1)/(n/2−1) ≠ 2 that would scale a 24-voxel translation by ~2 %.)
    """
    ndim = displacement.shape[1]
    coarse = displacement.shape[2:]
    mode = "bilinear" if ndim == 2 else "trilinear"
    up = F.interpolate(displacement, size=tuple(2 * n for n in coarse), mode=mode, align_corners=False)
    return crop_to(2.0 * up, shape)


def avg_pool(image: torch.Tensor) -> torch.Tensor:
    pool = F.avg_pool2d if image.dim() == 4 else F.avg_pool3d
    return pool(pad_to_multiple(image, 2), 2)


class CoordinateAttentionStep(nn.Module):
    """Ξ: fixed (query) features cropped to the grid, moving (key) features kept on the zero-padded grid, so
    the expected coordinates range over −pad … N + pad − 1 and correspondences can leave the field of view."""

    steps = 1

    def __init__(self, ndim: int, channels: int = 32, blocks: int = 2, pad: int = 9, chunk: int = 4096):
        super().__init__()
        self.encoder = EquivariantEncoder(ndim, channels, blocks)
        self.ndim, self.pad, self.chunk = ndim, int(pad), int(chunk)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        p, shape = self.pad, tuple(fixed.shape[2:])
        padded = F.pad(torch.cat([moving, fixed]), [p] * (2 * self.ndim))
        key, query = self.encoder(padded).chunk(2)
        query = query[(slice(None), slice(None)) + tuple(slice(p, p + n) for n in shape)]
        key_coords = identity_grid(padded.shape[2:], device=key.device) - p
        expected = coordinate_attention(query, key, key_coords, chunk=self.chunk)
        return expected - identity_grid(shape, device=key.device)


class DisplacementStep(nn.Module):
    """Ψ: U-Net on cat(moving∘φ, fixed) → displacement (voxels); zero-initialised head (starts at identity).
    Pads the input to the U-Net's multiple of 2^levels and crops the output back."""

    steps = 1

    def __init__(self, ndim: int, encoder: Sequence[int] = (16, 32, 32, 32), decoder: Sequence[int] | None = None,
                 final_convs: Sequence[int] = (16,)):
        super().__init__()
        self.unet = UNet(ndim, 2, encoder, decoder, final_convs)
        self.head = conv_nd(ndim)(self.unet.out_channels, ndim, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        x = pad_to_multiple(torch.cat([moving, fixed], dim=1), 2**self.unet.levels)
        return crop_to(self.head(self.unet(x)), fixed.shape[2:])


class Down(nn.Module):
    """Down{Φ}[M, F] = Φ[avgpool(M, 2), avgpool(F, 2)], the displacement brought back to the input grid."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step
        self.steps = step.steps

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        coarse = self.step(avg_pool(moving), avg_pool(fixed), depth)
        return upsample_displacement(coarse, fixed.shape[2:])


class TwoStep(nn.Module):
    """TwoStep{Φ, Ψ}[M, F] = φ ∘ ψ, φ = Φ[M, F], ψ = Ψ[M∘φ, F]; stops after Φ when `depth` ≤ Φ's steps."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first, self.second = first, second
        self.steps = first.steps + second.steps

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        phi = self.first(moving, fixed, depth)
        if depth is not None and depth <= self.first.steps:
            return phi
        rest = None if depth is None else depth - self.first.steps
        psi = self.second(warp(moving, phi), fixed, rest)
        return compose(phi, psi)


class CARL(nn.Module):
    """Ξ at 1/4 resolution, Ψ1 at 1/2, Ψ2 at full resolution; any input size (zero-padded to a multiple of 4,
    so the quarter grid is an exact 4×4(×4) average, then cropped back)."""

    architecture = "CARL"
    multiple = 4

    def __init__(self, ndim: int = 3, channels: int = 32, blocks: int = 2, pad: int = 9,
                 unet_encoder: Sequence[int] = (16, 32, 32, 32), unet_decoder: Sequence[int] | None = None,
                 unet_final: Sequence[int] = (16,), attention_chunk: int = 4096):
        super().__init__()
        self.config = {"ndim": ndim, "channels": channels, "blocks": blocks, "pad": pad,
                       "unet_encoder": list(unet_encoder),
                       "unet_decoder": None if unet_decoder is None else list(unet_decoder),
                       "unet_final": list(unet_final), "attention_chunk": attention_chunk}
        self.ndim = ndim
        xi = CoordinateAttentionStep(ndim, channels, blocks, pad, attention_chunk)
        psi1, psi2 = (DisplacementStep(ndim, unet_encoder, unet_decoder, unet_final) for _ in range(2))
        self.network = TwoStep(Down(TwoStep(Down(xi), psi1)), psi2)

    @property
    def xi(self) -> CoordinateAttentionStep:
        return self.network.first.step.first.step

    @property
    def psi1(self) -> DisplacementStep:
        return self.network.first.step.second

    @property
    def psi2(self) -> DisplacementStep:
        return self.network.second

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, *, depth: int = 3) -> torch.Tensor:
        """Displacement (B, ndim, *S) in voxels of the fixed grid: x_moving = x + u(x)."""
        if moving.shape != fixed.shape or moving.dim() != self.ndim + 2:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must both be "
                             f"(B, 1, *S) with {self.ndim} spatial axes")
        if not 1 <= depth <= self.network.steps:
            raise ValueError(f"depth must be in 1..{self.network.steps}")
        shape = fixed.shape[2:]
        u = self.network(pad_to_multiple(moving, self.multiple), pad_to_multiple(fixed, self.multiple), depth)
        return crop_to(u, shape)

    def forward_pair(self, moving: torch.Tensor, fixed: torch.Tensor, *, depth: int = 3
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(φ_AB, φ_BA) for A = moving, B = fixed: φ_AB on B's grid (A∘φ_AB ≈ B), φ_BA from the swapped pass
        (its approximate inverse, seed B.9.11). One batched call: no layer mixes batch samples."""
        both = self(torch.cat([moving, fixed]), torch.cat([fixed, moving]), depth=depth)
        ab, ba = both.chunk(2)
        return ab, ba
