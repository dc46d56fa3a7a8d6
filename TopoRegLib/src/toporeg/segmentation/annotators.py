"""Simulated annotators of an ambiguous structure, drawn from a probabilistic atlas (the ambiguous task).

A probability map p (default: white matter, ICBM 2009a / a partial-volume fraction; see data_cache) says how often raters put a voxel inside the
structure; where 0 < p < 1 the boundary is a matter of opinion. Annotator k of K thresholds p at
t_k = lo + (hi − lo)(k + u)/K, u ~ U(0, 1) (stratified: annotator 0 is the most liberal, K−1 the most
conservative; together they sample a uniform threshold), after adding a smooth random boundary perturbation
scaled by 4p(1 − p), so that the certain core (p ≈ 1) and the certain outside (p ≈ 0) are never disputed and
the masks differ only where raters really disagree. Each draw perturbs anew: an annotator is a distribution
of masks, and the K strata give the ensemble disjoint annotator sets as in Czolbe et al. (IPMI 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config_dict import DictConfig
from ..training.synth import RandomFields


@dataclass
class AnnotatorConfig(DictConfig):
    n: int = 4
    threshold: tuple[float, float] = (0.25, 0.75)
    boundary: float = 0.15                         # perturbation amplitude (probability units, at p = ½)
    spacing: tuple[float, float] = (4.0, 10.0)     # voxels between control points of the perturbation


def thresholds(rng: RandomFields, batch: int, n: int, lo: float, hi: float) -> torch.Tensor:
    """(B, n) stratified thresholds, increasing with the annotator index."""
    k = torch.arange(n, device=rng.device, dtype=torch.float32)
    return lo + (hi - lo) * (k + rng.uniform(0.0, 1.0, (batch, n))) / n


def annotator_masks(prob: torch.Tensor, rng: RandomFields, config: AnnotatorConfig | None = None,
                    n: int | None = None) -> torch.Tensor:
    """(B, K, *S) int64 {0, 1} masks of K annotators for probability maps `prob` (B, 1, *S) in [0, 1]."""
    c = config or AnnotatorConfig()
    k = n or c.n
    b, shape = prob.shape[0], tuple(prob.shape[2:])
    t = thresholds(rng, b, k, *c.threshold).view(b, k, *([1] * len(shape)))
    wobble = rng.smooth_noise(b, k, shape, rng.scalar(*c.spacing)) * c.boundary * 4.0 * prob * (1.0 - prob)
    return ((prob + wobble) > t).long()


def agreement(masks: torch.Tensor) -> torch.Tensor:
    """(B, *S) fraction of annotators marking each voxel (the annotators' own soft label)."""
    return masks.float().mean(1)
