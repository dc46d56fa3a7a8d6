"""VoxelMorph-diff (Dalca et al., MedIA 2019): a probabilistic diffeomorphic registration network.

A U-Net on concat(moving, fixed) predicts the mean μ and the log-variance log Σ of a stationary velocity field
v at 1/2^`velocity_level` resolution (half by default). Training draws one reparameterised sample
v = μ + exp(½ log Σ)·ε; evaluation uses μ. φ = exp(v) by scaling and squaring (`toporeg.transforms.integrate_svf`,
T = `int_steps`, changeable per call) on the velocity grid, then `resize_displacement` brings the displacement to
the full grid (it rescales the values, so the ×2 of the half-resolution field is never forgotten).

Units and convention: v, μ and Σ are in voxels (resp. voxels²) *of the velocity grid*; the displacement is in
voxels of the full (fixed) grid, with x_moving = x + u(x) and warped = moving ∘ (id + u). The inverse is exp(−v).
The prior (see `losses.kl_laplacian`) acts on v itself, not on v/2^T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transforms.integration import integrate_svf
from ..transforms.sampling import resize_displacement, warp
from .unet import UNet, conv_nd


@dataclass
class VxmDiffOutput:
    velocity_mean: torch.Tensor            # (B, ndim, *velocity grid)
    velocity_logvar: torch.Tensor          # (B, ndim, *velocity grid), log Σ
    velocity: torch.Tensor                 # the field integrated: a sample (training) or μ
    displacement: torch.Tensor             # (B, ndim, *full grid), voxels, fixed grid
    warped: torch.Tensor                   # moving ∘ (id + u)
    inverse_displacement: torch.Tensor | None = None   # exp(−v) on the full grid
    warped_fixed: torch.Tensor | None = None           # fixed ∘ (id + u⁻¹) (bidirectional term)
    velocity_factor: int = 2               # full-grid voxels per velocity-grid voxel

    @property
    def velocity_variance(self) -> torch.Tensor:
        return self.velocity_logvar.exp()

    def uncertainty(self) -> torch.Tensor:
        """(B, 1, *full grid) total velocity variance Σ_c Σ_c(x), in full-grid voxels² (registration uncertainty)."""
        var = self.velocity_variance.sum(1, keepdim=True) * float(self.velocity_factor**2)
        shape = tuple(self.displacement.shape[2:])
        if tuple(var.shape[2:]) == shape:
            return var
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        return F.interpolate(var, size=shape, mode=mode, align_corners=True)


class VoxelMorphDiff(nn.Module):
    """μ/log Σ heads on a backbone; `backbone` may be any module mapping (B, 2, *S) to features at
    1/2^velocity_level resolution and exposing `out_channels` (default: the shared `UNet`)."""

    architecture = "VoxelMorphDiff"

    def __init__(self, ndim: int = 3, encoder=(16, 32, 32, 32), decoder=(32, 32, 32), final_convs=(32,), *,
                 velocity_level: int = 1, int_steps: int = 7, batch_norm: bool = False, dropout: float = 0.0,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.ndim, self.int_steps, self.velocity_level = ndim, int_steps, velocity_level
        self.config = dict(ndim=ndim, encoder=list(encoder), decoder=list(decoder), final_convs=list(final_convs),
                           velocity_level=velocity_level, int_steps=int_steps, batch_norm=batch_norm, dropout=dropout)
        if backbone is None:
            backbone = UNet(ndim, 2, encoder, decoder, final_convs, output_level=velocity_level, down_kernel=3,
                            convs_per_stage=1, batch_norm=batch_norm, dropout=dropout)
        else:
            self.config["backbone"] = type(backbone).__name__  # custom: the card cannot rebuild it alone
        self.backbone = backbone
        conv = conv_nd(ndim)
        self.mean_head = conv(backbone.out_channels, ndim, 3, padding=1)
        self.logvar_head = conv(backbone.out_channels, ndim, 3, padding=1)
        nn.init.normal_(self.mean_head.weight, 0.0, 1e-5)
        nn.init.zeros_(self.mean_head.bias)
        nn.init.normal_(self.logvar_head.weight, 0.0, 1e-10)
        nn.init.constant_(self.logvar_head.bias, -10.0)

    @property
    def velocity_factor(self) -> int:
        return 2**self.velocity_level

    def predict_velocity(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log Σ) in float32, on the velocity grid."""
        if moving.shape != fixed.shape or moving.dim() != self.ndim + 2:
            raise ValueError(f"expected two (B, 1, *S) {self.ndim}D tensors of equal shape, "
                             f"got {tuple(moving.shape)} and {tuple(fixed.shape)}")
        feats = self.backbone(torch.cat([moving, fixed], dim=1))
        return self.mean_head(feats).float(), self.logvar_head(feats).float()

    def integrate(self, velocity: torch.Tensor, shape, steps: int | None = None) -> torch.Tensor:
        """exp(v) on the velocity grid, resized (and rescaled) to the full grid `shape`."""
        with torch.autocast(velocity.device.type, enabled=False):
            disp = integrate_svf(velocity.float(), self.int_steps if steps is None else steps)
            return resize_displacement(disp, tuple(shape))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, *, sample: bool | None = None,
                int_steps: int | None = None, return_inverse: bool = False,
                noise_generators: Sequence[torch.Generator] | None = None) -> VxmDiffOutput:
        """`noise_generators`: one per batch sample for its velocity draw (default: the global RNG), so that a
        batch split across data-parallel processes draws the same noise as the whole batch in one process."""
        mean, logvar = self.predict_velocity(moving, fixed)
        sample = self.training if sample is None else sample
        velocity = mean + torch.exp(0.5 * logvar) * _noise(mean, noise_generators) if sample else mean
        shape = tuple(moving.shape[2:])
        disp = self.integrate(velocity, shape, int_steps)
        warped = warp(moving.float(), disp)
        inverse = warped_fixed = None
        if return_inverse:
            inverse = self.integrate(-velocity, shape, int_steps)
            warped_fixed = warp(fixed.float(), inverse)
        return VxmDiffOutput(mean, logvar, velocity, disp, warped, inverse, warped_fixed, self.velocity_factor)


def _noise(like: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like `like`: from the global RNG, or sample b from `generators[b]`."""
    if generators is None:
        return torch.randn_like(like)
    if len(generators) != like.shape[0]:
        raise ValueError(f"{len(generators)} noise generators for a batch of {like.shape[0]}")
    return torch.cat([torch.randn((1, *like.shape[1:]), generator=g, device=like.device, dtype=like.dtype)
                      for g in generators])
