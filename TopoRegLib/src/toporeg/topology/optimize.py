"""Training-free topology heatmaps: fit q(Φ|I,J) = N(μ, diag v) for one pair under the model's ELBO.

No network: μ (a displacement on J's grid, voxels) is optimised with Adam from an initial registration; v is the
Gauss–Newton optimum given μ (`elbo.gauss_newton_variance`); α, β are refitted in closed form every iteration
(`prior.fit_alpha_beta`) and Σ_f is estimated once, robustly, from the initial residual. This works on any
modality with intensity features and before any topology network has been trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..progress import Progress
from ..registration.device import threads_for_grid
from ..registration.optimise import minimise
from ..registration.settings import RegistrationSettings
from ..transforms.sampling import warp
from .elbo import ScoreTerms, gauss_newton_variance, robust_feature_variance, score_terms
from .prior import PriorParameters, fit_alpha_beta, prior_only_variance


@dataclass
class PairFit:
    """q(Φ|I,J) for one pair and its per-voxel score L(J|I), all on J's (the fixed) grid."""

    mu: torch.Tensor            # (1, D, *S) displacement, voxels: x_I = x_J + μ(x_J)
    var: torch.Tensor           # (1, D, *S) displacement variance, voxels²
    prior: PriorParameters
    sigma2: torch.Tensor        # (F,) feature noise variances
    terms: ScoreTerms

    @property
    def score(self) -> torch.Tensor:
        """(*S) L(J|I) in nats per voxel."""
        return self.terms.total[0]


def fit_pair(fixed: torch.Tensor, moving: torch.Tensor, features, *, init_mu: torch.Tensor | None = None,
             iterations: int = 60, lr: float = 0.1, prior: PriorParameters | None = None,
             sigma2: torch.Tensor | None = None, progress: Progress | None = None, coarse: int = 1) -> PairFit:
    """Fit μ, v for J = `fixed`, I = `moving` (both (1, 1, *S) on the same grid). `prior`/`sigma2` given:
    kept fixed (e.g. a learned model's running values); otherwise fitted to this pair.

    `coarse` > 1 optimises μ on the feature maps averaged over coarse³ blocks (μ is smooth under the prior) and
    then scores once at full resolution: what makes 80-channel semantic features affordable on a 3D brain."""
    progress = progress or Progress()
    shape = fixed.shape[2:]
    full_fixed, full_moving = features(fixed).detach(), features(moving).detach()
    mu_full0 = init_mu if init_mu is not None else torch.zeros((1, len(shape), *shape), device=fixed.device)
    with torch.no_grad():
        s2 = sigma2 if sigma2 is not None else robust_feature_variance(
            full_fixed, warp(full_moving, mu_full0.float(), padding="border"))
    f_fixed, f_moving = _coarser(full_fixed, coarse), _coarser(full_moving, coarse)
    coarse_shape = f_fixed.shape[2:]
    mu = torch.nn.Parameter(resize_displacement(mu_full0.detach().float(), coarse_shape))
    with torch.no_grad():
        warped0 = warp(f_moving, mu, padding="border")
        state = {"prior": prior or _initial_prior(mu, warped0, s2)}

    def variance(warped: torch.Tensor) -> torch.Tensor:
        return gauss_newton_variance(warped.detach(), s2, state["prior"])

    def loss_fn() -> torch.Tensor:
        warped = warp(f_moving, mu, padding="border")
        var = variance(warped)
        if prior is None:
            state["prior"] = fit_alpha_beta(mu.detach(), var)
        terms = score_terms(f_fixed, warped, mu, var, s2, state["prior"])
        return terms.total.mean()

    optimiser = torch.optim.Adam([mu], lr=lr)
    settings = RegistrationSettings(early_stop_window=10, early_stop_tolerance=1e-5)
    with threads_for_grid(math.prod(coarse_shape), fixed.device):  # small grids: one thread, as the registration engine
        minimise(loss_fn, optimiser, iterations, settings,
                 lambda i, loss: progress.update("topology", i / max(iterations, 1), f"ELBO fit {i}/{iterations}"))
    with torch.no_grad():
        mu_final = resize_displacement(mu.detach(), shape)
        f_fixed, f_moving = full_fixed, full_moving
        warped = warp(f_moving, mu_final, padding="border")
        var = variance(warped)
        if prior is None:
            state["prior"] = fit_alpha_beta(mu_final, var)
        terms = score_terms(f_fixed, warped, mu_final, var, s2, state["prior"])
    return PairFit(mu_final, var, state["prior"], s2, terms)


def _coarser(features: torch.Tensor, factor: int) -> torch.Tensor:
    if factor <= 1:
        return features
    size = [max(1, n // factor) for n in features.shape[2:]]
    return F.adaptive_avg_pool3d(features, size) if features.dim() == 5 else F.adaptive_avg_pool2d(features, size)


def resize_displacement(mu: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """A (1, D, *S) displacement in voxels resampled to another grid over the same field of view (values scaled
    per axis by the size ratio); unchanged when the shape already matches."""
    if tuple(mu.shape[2:]) == tuple(shape):
        return mu.clone()
    mode = "trilinear" if mu.dim() == 5 else "bilinear"
    out = F.interpolate(mu, size=tuple(shape), mode=mode, align_corners=False)
    ratio = torch.tensor([n / m for n, m in zip(shape, mu.shape[2:])], dtype=mu.dtype, device=mu.device)
    return out * ratio.view(1, -1, *([1] * len(shape)))


def _initial_prior(mu: torch.Tensor, warped: torch.Tensor, sigma2: torch.Tensor) -> PriorParameters:
    """α, β for the first Gauss–Newton variance: fitted with the prior-only variance of a unit prior, then once
    more with the data-informed variance."""
    unit = PriorParameters(1.0, 1.0)
    var = prior_only_variance(tuple(mu.shape[2:]), unit, device=mu.device).expand_as(mu)
    first = fit_alpha_beta(mu, var)
    return fit_alpha_beta(mu, gauss_newton_variance(warped, sigma2, first))




@torch.no_grad()
def rescore(fit: PairFit, fixed: torch.Tensor, moving: torch.Tensor, features, sigma2: torch.Tensor,
            prior: PriorParameters) -> PairFit:
    """The same μ scored with other (shared) Σ_f, α, β — v is re-derived (Gauss–Newton) — so that maps of
    different pairs are in the same nats (what the control-set outlier score subtracts)."""
    f_fixed, f_moving = features(fixed), features(moving)
    warped = warp(f_moving, fit.mu, padding="border")
    var = gauss_newton_variance(warped, sigma2, prior)
    terms = score_terms(f_fixed, warped, fit.mu, var, sigma2, prior)
    return PairFit(fit.mu, var, prior, sigma2, terms)


def shared_parameters(fits: list[PairFit]) -> tuple[torch.Tensor, PriorParameters]:
    """Geometric means of Σ_f, α, β over a set of pair fits (one scale for a whole control set)."""
    sigma2 = torch.stack([f.sigma2 for f in fits]).log().mean(0).exp()
    alpha = float(torch.tensor([f.prior.alpha for f in fits]).log().mean().exp())
    beta = float(torch.tensor([f.prior.beta for f in fits]).log().mean().exp())
    return sigma2, PriorParameters(alpha, beta)
