"""Per-voxel ELBO terms of the topology model (Czolbe et al. 2021, Eq. 3 and 6), in nats per voxel.

L_k(J|I) = −log N(f_k(J) | f_k(I)∘Φ, Σ_f) + KL_k(q‖p_αβ), with Φ = id + μ on J's grid (the fixed grid).
High values mark voxels that no smooth deformation of I explains: candidate topological changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.losses import grid_degree
from .prior import PriorParameters, kl_per_voxel

LOG_2PI = math.log(2 * math.pi)


def reconstruction_nll(fixed_features: torch.Tensor, warped_features: torch.Tensor,
                       sigma2: torch.Tensor) -> torch.Tensor:
    """(B, *S): ½ Σ_c [(f_J − f_I∘Φ)² / σ_c² + log 2πσ_c²], the Gaussian feature likelihood per voxel."""
    s2 = sigma2.view(1, -1, *([1] * (fixed_features.dim() - 2)))
    return 0.5 * ((fixed_features - warped_features) ** 2 / s2 + torch.log(2 * math.pi * s2)).sum(1)


def robust_feature_variance(fixed_features: torch.Tensor, warped_features: torch.Tensor, *,
                            floor: float = 1e-4) -> torch.Tensor:
    """(F,) Σ_f per channel from the residual's median absolute deviation (×1.4826)², so that the changed
    regions we are looking for do not inflate it; floored at `floor` × the channel's variance."""
    r = (fixed_features - warped_features).transpose(0, 1).flatten(1)
    mad = (r - r.median(dim=1, keepdim=True).values).abs().median(dim=1).values
    spread = fixed_features.transpose(0, 1).flatten(1).var(dim=1)
    return torch.maximum((1.4826 * mad) ** 2, floor * spread.clamp_min(1e-12))


def spatial_gradient(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, *S): central differences along each spatial axis (one-sided at the borders), per voxel."""
    grads = [torch.gradient(x, dim=axis + 2)[0] for axis in range(x.dim() - 2)]
    return torch.stack(grads, dim=2)


def gauss_newton_variance(warped_features: torch.Tensor, sigma2: torch.Tensor,
                          prior: PriorParameters) -> torch.Tensor:
    """(B, D, *S): the ELBO-optimal per-voxel displacement variance under a linearised likelihood,
    v_k^(d) = 1 / (α|N(k)| + β/n² + Σ_c (∂_d f_c(I∘Φ))_k² / σ_c²).

    E_q[(f_J − f_I∘(id+Φ))²] ≈ r² + Σ_d v_d g_d² for Φ ~ N(μ, v) (Gauss–Newton); with the prior's diagonal this
    makes the optimal v closed-form, so the training-free fit needs no sampling."""
    shape = warped_features.shape[2:]
    n = math.prod(shape)
    g = spatial_gradient(warped_features)  # (B, C, D, *S)
    s2 = sigma2.view(1, -1, 1, *([1] * len(shape)))
    data_precision = (g**2 / s2).sum(1)  # (B, D, *S)
    deg = grid_degree(shape, device=g.device, dtype=g.dtype)
    return 1.0 / (prior.alpha * deg + prior.beta / n**2 + data_precision)


@dataclass
class ScoreTerms:
    """Per-voxel maps (B, *S) on the fixed grid, nats."""

    reconstruction: torch.Tensor
    kl: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.reconstruction + self.kl


def score_terms(fixed_features: torch.Tensor, warped_features: torch.Tensor, mu: torch.Tensor, var: torch.Tensor,
                sigma2: torch.Tensor, prior: PriorParameters) -> ScoreTerms:
    """Eq. 6: L_k(J|I) with Φ = μ, split into its likelihood and KL parts."""
    return ScoreTerms(reconstruction_nll(fixed_features, warped_features, sigma2),
                      kl_per_voxel(mu, var, prior))
