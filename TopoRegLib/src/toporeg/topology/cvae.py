"""The "Spot the Difference" CVAE (Czolbe et al. 2021): q(Φ|I,J) from a U-Net, decoder I∘Φ, learnable prior.

Encoder: U-Net (batch-norm stages, LeakyReLU) on concat(I, J) → per-voxel displacement mean μ and log-variance
log v at full resolution (a displacement on J's grid, not an SVF, so the per-voxel terms live on J's grid).
Likelihood N(f(J) | f(I)∘Φ, Σ_f) with a learned diagonal Σ_f (one variance per feature channel); f is the
intensity or the semantic map of a frozen DeepSim-seg extractor stored *inside* this model (one weights file).
α, β: closed-form ELBO maximisers per training batch, running means (buffers) at test time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..geometry.tensors import pad_tensor_to_multiple
from ..models.deepsim import DeepSimExtractor
from ..models.unet import UNet, conv_nd
from ..reductions import batch_mean
from ..transforms.sampling import warp
from .elbo import reconstruction_nll, score_terms
from .features import IntensityFeatures, SemanticFeatures
from .optimize import PairFit
from .prior import PriorParameters, fit_alpha_beta, kl_per_voxel


class TopologyCVAE(nn.Module):
    architecture = "TopologyCVAE"

    def __init__(self, ndim: int = 2, encoder: Sequence[int] = (32, 64, 64, 64),
                 decoder: Sequence[int] = (64, 64, 64, 32), final_convs: Sequence[int] = (32,), *,
                 features: str = "intensity", extractor: dict | None = None, prior_momentum: float = 0.01):
        super().__init__()
        if features not in ("intensity", "semantic"):
            raise ValueError("features must be 'intensity' or 'semantic'")
        if features == "semantic" and not extractor:
            raise ValueError("semantic features need the DeepSim extractor's configuration")
        self.ndim, self.features_kind, self.prior_momentum = ndim, features, prior_momentum
        self.config = dict(ndim=ndim, encoder=list(encoder), decoder=list(decoder), final_convs=list(final_convs),
                           features=features, extractor=extractor, prior_momentum=prior_momentum)
        self.unet = UNet(ndim, 2, encoder, decoder, final_convs, batch_norm=True)
        conv = conv_nd(ndim)
        self.mean_head = conv(self.unet.out_channels, ndim, 3, padding=1)
        self.logvar_head = conv(self.unet.out_channels, ndim, 3, padding=1)
        for head, bias in ((self.mean_head, 0.0), (self.logvar_head, -4.0)):
            nn.init.normal_(head.weight, std=1e-5)
            nn.init.constant_(head.bias, bias)
        self.extractor = DeepSimExtractor(**extractor) if features == "semantic" else None
        if self.extractor is not None:
            self.extractor.requires_grad_(False)
        channels = 1 if self.extractor is None else sum(self.extractor.config["channels"][:3])
        self.log_sigma2 = nn.Parameter(torch.full((channels,), math.log(0.01)))
        self.register_buffer("sigma2_initialised", torch.tensor(False))
        self.register_buffer("alpha", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("beta", torch.tensor(float("nan"), dtype=torch.float64))

    # -- pieces ---------------------------------------------------------------------------------------
    def feature_map(self, device=None):
        if self.extractor is None:
            return IntensityFeatures()
        return SemanticFeatures(self.extractor.to(device) if device is not None else self.extractor)

    def train(self, mode: bool = True) -> "TopologyCVAE":
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()  # frozen: batch-norm statistics stay those of its own training
        return self

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log v), each (B, ndim, *S): q(Φ_{J→I} | I = moving, J = fixed)."""
        h = self.unet(torch.cat([moving, fixed], dim=1))
        return self.mean_head(h), self.logvar_head(h).clamp(-20.0, 10.0)

    @property
    def sigma2(self) -> torch.Tensor:
        return self.log_sigma2.exp()

    def running_prior(self) -> PriorParameters:
        if not (torch.isfinite(self.alpha) and torch.isfinite(self.beta)):
            raise RuntimeError("this topology model has no running α, β (it was never trained)")
        return PriorParameters(float(self.alpha), float(self.beta))

    def update_prior(self, fitted: PriorParameters) -> None:
        with torch.no_grad():
            if not torch.isfinite(self.alpha):
                self.alpha.fill_(fitted.alpha)
                self.beta.fill_(fitted.beta)
            else:
                m = self.prior_momentum
                self.alpha.mul_(1 - m).add_(m * fitted.alpha)
                self.beta.mul_(1 - m).add_(m * fitted.beta)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the flag existed were trained with their Σ_f: mark it initialised
        state_dict.setdefault(prefix + "sigma2_initialised", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _initialise_sigma2(self, f_fixed: torch.Tensor, warped: torch.Tensor) -> None:
        """Σ_f starts at the first batch's per-channel residual variance: features span orders of magnitude
        (DeepSim channels), and Adam would otherwise spend thousands of steps walking log σ² there."""
        if bool(self.sigma2_initialised):
            return
        residual = (f_fixed - warped).transpose(0, 1).flatten(1)
        self.log_sigma2.copy_(batch_mean(residual.pow(2), 1).clamp_min(1e-8).log())  # same on every process
        self.sigma2_initialised.fill_(True)

    # -- training and scoring ---------------------------------------------------------------------------
    def negative_elbo(self, fixed: torch.Tensor, moving: torch.Tensor, features=None) -> dict[str, torch.Tensor]:
        """One reparameterised sample; α, β fitted in closed form on this batch (and folded into the running
        means). Returns per-voxel means of the terms (nats per voxel)."""
        features = features or self.feature_map()
        mu, logvar = self(fixed, moving)
        var = logvar.exp()
        phi = mu + var.sqrt() * torch.randn_like(mu)
        with torch.no_grad():
            f_fixed, f_moving = features(fixed), features(moving)
        warped = warp(f_moving, phi, padding="border")
        prior = fit_alpha_beta(mu.detach(), var.detach())
        if self.training:
            self.update_prior(prior)
            self._initialise_sigma2(f_fixed, warped.detach())
        nll = reconstruction_nll(f_fixed, warped, self.sigma2)
        kl = kl_per_voxel(mu, var, prior)
        return {"total": (nll + kl).mean(), "reconstruction": nll.mean().detach(), "kl": kl.mean().detach(),
                "alpha": torch.tensor(prior.alpha), "beta": torch.tensor(prior.beta)}

    @torch.no_grad()
    def fit_pair(self, fixed: torch.Tensor, moving: torch.Tensor, features=None) -> PairFit:
        """q(Φ|I,J) by one forward pass (Φ = μ), scored with the running α, β and the learned Σ_f (Eq. 6)."""
        was_training = self.training
        self.eval()
        features = features or self.feature_map()
        padded_fixed, crop = pad_tensor_to_multiple(fixed, 2 ** len(self.unet.encoder))
        padded_moving, _ = pad_tensor_to_multiple(moving, 2 ** len(self.unet.encoder))
        mu, logvar = self(padded_fixed, padded_moving)
        mu, var = mu[crop], logvar[crop].exp()
        prior = self.running_prior()
        f_fixed, f_moving = features(fixed), features(moving)
        warped = warp(f_moving, mu, padding="border")
        terms = score_terms(f_fixed, warped, mu, var, self.sigma2, prior)
        self.train(was_training)
        return PairFit(mu, var, prior, self.sigma2.detach(), terms)


def load_topology_model(name_or_path: str | Path, *, device="cpu") -> tuple[TopologyCVAE, dict[str, Any]]:
    """A trained topology CVAE by bundled name or weights path (checksum verified by `load_model`)."""
    from ..models.catalogue import resolve_model
    from ..models.weights import load_model
    model, card = load_model(resolve_model(name_or_path), device=device)
    if not isinstance(model, TopologyCVAE):
        raise ValueError(f"{name_or_path} is not a topology model (architecture {type(model).__name__})")
    return model.eval(), card
