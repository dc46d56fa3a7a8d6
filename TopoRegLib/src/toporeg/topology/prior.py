"""The learnable Laplacian prior of "Spot the Difference" (Czolbe et al. 2021, Eq. 4–6), decomposed per voxel.

p(Φ) = Π_d N(Φ^(d) | 0, Λ_αβ⁻¹),  Λ_αβ = αΛ + (β/n²)·11ᵀ,  Λ the grid-graph Laplacian (face neighbours, free
borders). Φ is a *displacement* on the fixed grid, in voxels; q(Φ|I,J) = N(μ, diag v) per voxel and axis.

The exact Gaussian KL, per axis d (n voxels):

    2·KL_d = Σ_k (α|N(k)| + β/n²)·v_k + α·Σ_edges (μ_k − μ_l)² + β·mean(μ)² − Σ_k log v_k − n
             − (n − 1)·log α − log(β/n) − log pdet Λ

(Λ_αβ has eigenvalue β/n along 1, α·λ_j on the rest). The paper's Eq. 5 writes Σ_k Σ_{l∈N(k)}, i.e. every edge
twice; we keep the exact form and split each edge half to each end, so that the per-voxel terms sum to the KL.
α, β maximise the ELBO in closed form (only this term depends on them):

    α* = B·D·(n − 1) / Σ_{b,d} [ Σ_k |N(k)| v_k + Σ_edges (μ_k − μ_l)² ]
    β* = B·D / Σ_{b,d} [ Σ_k v_k / n² + mean(μ)² ]

`log_pdet_grid_laplacian` uses the closed-form spectrum of a product of path graphs, so the per-voxel map is
in true nats (comparable across subjects of the same grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..models.losses import grid_degree, laplacian_quadratic
from ..reductions import batch_sum, pooling


def edge_energy_per_voxel(mu: torch.Tensor) -> torch.Tensor:
    """(B, *S): ½ Σ_d Σ_{l∈N(k)} (μ_k − μ_l)², each edge shared half-half by its two voxels."""
    out = torch.zeros(mu.shape[:1] + mu.shape[2:], dtype=mu.dtype, device=mu.device)
    for axis in range(mu.dim() - 2):
        sq = (mu.diff(dim=axis + 2) ** 2).sum(1)  # (B, ..., n_axis - 1, ...)
        half = 0.5 * sq
        n = mu.shape[axis + 2]
        out = out + torch.nn.functional.pad(half, _pad_spec(mu.dim() - 2, axis, (0, 1)))
        out = out + torch.nn.functional.pad(half, _pad_spec(mu.dim() - 2, axis, (1, 0)))
        assert out.shape[axis + 1] == n
    return out


def _pad_spec(ndim: int, axis: int, before_after: tuple[int, int]) -> tuple[int, ...]:
    """F.pad spec padding only spatial `axis` of a (B, *S) tensor (F.pad lists the last axis first)."""
    spec = [0, 0] * ndim
    pos = 2 * (ndim - 1 - axis)
    spec[pos], spec[pos + 1] = before_after[0], before_after[1]
    return tuple(spec)


@lru_cache(maxsize=32)
def log_pdet_grid_laplacian(shape: tuple[int, ...]) -> float:
    """log of the product of the non-zero eigenvalues of the grid-graph Laplacian (face neighbours, free borders).

    The grid graph is the Cartesian product of path graphs P_n, whose Laplacian eigenvalues are
    2 − 2cos(πj/n), j = 0..n−1; the product graph's eigenvalues are all sums of one per axis.
    """
    eig = torch.zeros((), dtype=torch.float64)
    for n in tuple(shape):
        lam = 2.0 - 2.0 * torch.cos(math.pi * torch.arange(n, dtype=torch.float64) / n)
        eig = eig[..., None] + lam
    eig = eig.flatten()[1:]  # drop the single zero eigenvalue (j = 0 on every axis)
    return float(torch.log(eig).sum())


@dataclass
class PriorParameters:
    """α (smoothness precision) and β (translation precision), fitted or running means."""

    alpha: float
    beta: float

    def as_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}


def fit_alpha_beta(mu: torch.Tensor, var: torch.Tensor, *, eps: float = 1e-12) -> PriorParameters:
    """Closed-form ELBO maximisers of α, β over a batch (see module docstring); detached floats."""
    with torch.no_grad():
        shape = mu.shape[2:]
        n = math.prod(shape)
        batch_axes = mu.shape[0] * mu.shape[1]
        deg = grid_degree(shape, device=mu.device, dtype=var.dtype)
        alpha_den = (deg * var).sum() + laplacian_quadratic(mu)
        mean = mu.flatten(2).mean(-1)
        beta_den = var.sum() / n**2 + (mean**2).sum()
        if pooling():  # the batch is split across data-parallel processes: sums over all of it
            pooled = batch_sum(torch.stack([alpha_den, beta_den, alpha_den.new_tensor(float(batch_axes))]))
            alpha_den, beta_den, batch_axes = pooled[0], pooled[1], int(round(float(pooled[2])))
        alpha = batch_axes * (n - 1) / float(alpha_den.clamp_min(eps))
        beta = batch_axes / float(beta_den.clamp_min(eps))
    return PriorParameters(alpha, beta)


def kl_per_voxel(mu: torch.Tensor, var: torch.Tensor, prior: PriorParameters, *,
                 log_pdet: float | None = None) -> torch.Tensor:
    """(B, *S) KL(q‖p_αβ) per voxel in nats, summed over axes; Σ_k equals the exact total KL."""
    shape = mu.shape[2:]
    n = math.prod(shape)
    ndim = mu.shape[1]
    alpha, beta = prior.alpha, prior.beta
    if log_pdet is None:
        log_pdet = log_pdet_grid_laplacian(tuple(shape))
    deg = grid_degree(shape, device=mu.device, dtype=mu.dtype)[:, 0]  # (1, *S)
    total_mu = mu.flatten(2).sum(-1)  # (B, D)
    mean_term = (mu * total_mu.view(*total_mu.shape, *([1] * len(shape)))).sum(1) * (beta / n**2)
    var_term = ((alpha * deg[:, None] + beta / n**2) * var - torch.log(var)).sum(1)
    const = ndim * (1.0 + ((n - 1) * math.log(alpha) + math.log(beta / n) + log_pdet) / n)
    return 0.5 * (var_term + alpha * edge_energy_per_voxel(mu) + mean_term - const)


def prior_only_variance(shape: tuple[int, ...], prior: PriorParameters, *, device=None,
                        dtype=torch.float32) -> torch.Tensor:
    """(1, 1, *S) the ELBO-optimal v without data: 1 / (α|N(k)| + β/n²)."""
    n = math.prod(shape)
    return 1.0 / (prior.alpha * grid_degree(shape, device=device, dtype=dtype) + prior.beta / n**2)


class RunningPrior:
    """Running means of α, β across training batches; the values used at test time."""

    def __init__(self, momentum: float = 0.01):
        self.momentum = momentum
        self.alpha: float | None = None
        self.beta: float | None = None

    def update(self, fitted: PriorParameters) -> None:
        if self.alpha is None or self.beta is None:
            self.alpha, self.beta = fitted.alpha, fitted.beta
            return
        m = self.momentum
        self.alpha = (1 - m) * self.alpha + m * fitted.alpha
        self.beta = (1 - m) * self.beta + m * fitted.beta

    def parameters(self) -> PriorParameters:
        if self.alpha is None or self.beta is None:
            raise RuntimeError("the running prior has not seen any batch")
        return PriorParameters(self.alpha, self.beta)
