"""Baseline per-voxel topological-change scores (Czolbe et al. 2021, Sec. 4), to compare with L_sym and Q.

All take tensors on the fixed grid: fixed J (1, C, *S), moving I (1, C, *S), and the registration's displacement
μ (1, D, *S) in voxels with Φ_{J→I} = id + μ, so warped = warp(I, μ) (shared/CONVENTIONS.md). Each returns a (*S)
map like L_sym: higher means more likely a topological change. Warps use border padding, as the topology ELBO does.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..filters import gaussian_smooth
from ..transforms.jacobian import jacobian_determinant
from ..transforms.sampling import warp

Maps = torch.Tensor | Sequence[torch.Tensor]


def _single(t: torch.Tensor, name: str) -> None:
    if t.shape[0] != 1:
        raise ValueError(f"{name}: one pair at a time (batch 1), got batch {t.shape[0]}")


def jacobian_score(mu: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(det J_Φ)²: strong local stretching or shrinking where no smooth match exists.

    The determinant (toporeg.transforms.jacobian, the one every report uses) is clamped to [eps, ∞) *signed*, as in
    the authors' code: a folded voxel (det ≤ 0) scores as the extreme compression log(eps)², whereas |det| would
    score a reflection (det = −1) as 0."""
    _single(mu, "mu")
    return torch.log(jacobian_determinant(mu)[0].clamp_min(eps)) ** 2


def intensity_difference_score(fixed: torch.Tensor, moving: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """(I∘Φ − J)², summed over channels: the plain post-registration residual."""
    _single(fixed, "fixed")
    return ((warp(moving, mu, padding="border") - fixed) ** 2).sum(1)[0]


def gradient_magnitude(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(*S) squared gradient magnitude of the image smoothed with a Gaussian of `sigma` voxels (summed over
    channels): Gaussian-derivative filtering, as a derivative of the smoothed image (central differences)."""
    smooth = gaussian_smooth(image, sigma)[0]
    grads = torch.gradient(smooth, dim=tuple(range(1, smooth.dim())))
    return sum(g**2 for g in grads).sum(0)


def _minmax(x: torch.Tensor, floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(x − min) / max(max − min, floor): the floor keeps round-off-sized maps near 0 instead of stretching them."""
    lo, hi = x.min(), x.max()
    return (x - lo) / torch.clamp(hi - lo, min=max(float(floor), torch.finfo(x.dtype).tiny))


def li_wyatt_score(fixed: torch.Tensor, moving: torch.Tensor, mu: torch.Tensor, *,
                   sigma: float = 3.0) -> torch.Tensor:
    """Li & Wyatt (ISBI 2010) as evaluated by Czolbe et al.: a residual where the fixed image has no edge.

    score = norm((I∘Φ − J)²) · norm(1 − K·|∇G_σ * J|²), norm = min–max over the map. This is the formula of the
    authors' baseline code (SteffenCzolbe/TopologicalChangeDetection, src/baselines/li_wyatt_model.py, with
    Gaussian-derivative filters of σ = 6 px, K = 2, chosen there to maximise AUC); the original paper's formula was
    not findable here. A residual on a strong edge is an expected small misalignment; one in a flat region is
    unexplained content. After min–max normalisation K > 0 cancels exactly (norm(1 − K·g) = 1 − norm(g)), so it
    is not a parameter here. Default σ = 3 voxels: the paper's 6 px at ~1 mm pixels on our 2 mm grid. The
    residual's range is floored at 1e-6 of the squared intensity range, so interpolation round-off of a perfect
    match stays ≈ 0 rather than being stretched to [0, 1]."""
    diff = intensity_difference_score(fixed, moving, mu)
    floor = 1e-6 * float(fixed.max() - fixed.min()) ** 2
    return _minmax(diff, floor) * (1.0 - _minmax(gradient_magnitude(fixed, sigma)))


def _mean_map(maps: Maps) -> torch.Tensor:
    """A tensor is one map; a sequence is a set of maps, averaged."""
    if isinstance(maps, torch.Tensor):
        return maps
    if len(maps) == 0:
        raise ValueError("an empty set of score maps")
    return torch.stack(list(maps)).mean(0)


def outlier_adjusted(test_scores: Maps, control_score_maps: Maps) -> torch.Tensor:
    """A baseline turned into an outlier score like Q (Eq. 7): mean test map − mean control map.

    `test_scores`: the test image's map(s) s(J|I_c), one per control I_c (or one map); `control_score_maps`: the
    controls' own maps E_K[s(I_c|K)], already brought onto the test grid (∘Φ_{J→I_c}). By linearity this equals
    E_c[s(J|I_c) − E_K[s(I_c|K)]∘Φ_{J→I_c}]."""
    return _mean_map(test_scores) - _mean_map(control_score_maps)


def baseline_scores(fixed: torch.Tensor, moving: torch.Tensor, mu: torch.Tensor, *,
                    sigma: float = 3.0) -> dict[str, torch.Tensor]:
    """Every baseline for one registered pair: {"jacobian", "li_wyatt", "intensity"} → (*S) maps."""
    return {"jacobian": jacobian_score(mu), "li_wyatt": li_wyatt_score(fixed, moving, mu, sigma=sigma),
            "intensity": intensity_difference_score(fixed, moving, mu)}
