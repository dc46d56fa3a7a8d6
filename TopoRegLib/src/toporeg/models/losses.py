"""VoxelMorph-diff training loss: image likelihood + KL to the Laplacian-precision prior.

For q(v) = N(μ, diag Σ) and the prior p(v) = N(0, Λ⁻¹), Λ = λL (L = D − A, the grid-graph Laplacian, per
velocity component; D = number of in-grid neighbours: 2·ndim inside, fewer at the borders), the KL is, up to
a constant (Dalca et al. 2019, Eq. 6):

    KL = ½ [ λ Σ_i D_i Σ_i − Σ_i log Σ_i + λ μᵀLμ ],   μᵀLμ = Σ over neighbour pairs (edges) of (μ_i − μ_j)²

summed over voxels i and components. The image term is the Gaussian likelihood Σ_x (f − m∘φ)²/(2σ²)
(σ² = 0.02), or 1 − local NCC, or DeepSim. Reductions: the paper sums every term over voxels; here every
term is that sum divided by the number of full-grid voxels (and the batch), which keeps the paper's balance
between data and prior (so λ = 20, σ² = 0.02 keep their meaning) while giving O(1) numbers.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..reductions import weighted_mean

ImageTerm = Callable[..., torch.Tensor]


def grid_degree(shape, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, 1, *shape): D_i, the number of grid neighbours of each voxel (face neighbours, in the grid)."""
    deg = torch.zeros((1, 1, *shape), device=device, dtype=dtype)
    for axis, n in enumerate(shape):
        count = torch.full((n,), 2.0, device=device, dtype=dtype)
        count[0] -= 1
        count[-1] -= 1
        view = [1] * (len(shape) + 2)
        view[axis + 2] = n
        deg = deg + count.view(view)
    return deg


def laplacian_quadratic(field: torch.Tensor) -> torch.Tensor:
    """Σ_components μᵀLμ = Σ over edges (μ_i − μ_j)², summed over the batch."""
    return sum((field.diff(dim=axis + 2) ** 2).sum() for axis in range(field.dim() - 2))


def kl_laplacian(mean: torch.Tensor, logvar: torch.Tensor, lam: float, *,
                 normalizer: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance part ½Σ(λDΣ − log Σ), smoothness part ½λ μᵀLμ), each summed then divided by `normalizer`."""
    deg = grid_degree(mean.shape[2:], device=mean.device, dtype=logvar.dtype)
    sigma_term = 0.5 * (lam * deg * logvar.exp() - logvar).sum()
    smooth_term = 0.5 * lam * laplacian_quadratic(mean)
    return sigma_term / normalizer, smooth_term / normalizer


class GaussianImageTerm:
    """Σ_x (warped − fixed)² / (2σ²), per voxel (mean), optional voxel weights."""

    def __init__(self, sigma2: float = 0.02):
        self.sigma2 = sigma2

    def __call__(self, warped, fixed, weight=None):
        return weighted_mean((warped - fixed) ** 2, weight) / (2.0 * self.sigma2)


def make_image_term(name: str = "mse", *, sigma2: float = 0.02, ncc_window: int = 9, deepsim=None) -> ImageTerm:
    """'mse' (Gaussian likelihood with σ²), 'ncc' (1 − squared local NCC), 'deepsim' (needs an extractor)."""
    name = name.lower()
    if name in ("mse", "gaussian"):
        return GaussianImageTerm(sigma2)
    if name in ("ncc", "lncc"):
        # The engine's implementation; note `toporeg.registration` imports the file I/O stack (SimpleITK).
        from ..registration.similarity import LocalNCC
        return LocalNCC(window=ncc_window)
    if name == "deepsim":
        from .deepsim import DeepSimLoss
        if deepsim is None:
            raise ValueError("the DeepSim image term needs a feature extractor (module or weights path)")
        if isinstance(deepsim, DeepSimLoss):
            return deepsim
        if isinstance(deepsim, torch.nn.Module):
            return DeepSimLoss(deepsim)
        from .weights import load_model
        return DeepSimLoss(load_model(deepsim)[0])
    raise ValueError(f"unknown image term '{name}' (mse, ncc, deepsim)")


class VxmDiffLoss:
    """Total loss image_weight · image + kl_weight · KL, returned as a dict of terms (all scalars)."""

    def __init__(self, image: str | ImageTerm = "mse", *, sigma2: float = 0.02, lam: float = 20.0,
                 image_weight: float = 1.0, kl_weight: float = 1.0, bidirectional: bool = False,
                 ncc_window: int = 9, deepsim=None):
        self.image = make_image_term(image, sigma2=sigma2, ncc_window=ncc_window, deepsim=deepsim) \
            if isinstance(image, str) else image
        self.lam, self.image_weight, self.kl_weight = lam, image_weight, kl_weight
        self.bidirectional = bidirectional

    def __call__(self, out, moving: torch.Tensor, fixed: torch.Tensor,
                 weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        image = self.image(out.warped, fixed.float(), weight)
        if self.bidirectional:
            if out.warped_fixed is None:
                raise ValueError("the bidirectional term needs forward(..., return_inverse=True)")
            terms["image_forward"] = image
            terms["image_inverse"] = self.image(out.warped_fixed, moving.float(), None)
            image = 0.5 * (terms["image_forward"] + terms["image_inverse"])
        n_full = moving.shape[0] * moving[0, 0].numel()
        sigma_term, smooth_term = kl_laplacian(out.velocity_mean, out.velocity_logvar, self.lam, normalizer=n_full)
        kl = sigma_term + smooth_term
        terms.update(image=image, kl=kl, kl_sigma=sigma_term, kl_smooth=smooth_term,
                     total=self.image_weight * image + self.kl_weight * kl)
        return terms
