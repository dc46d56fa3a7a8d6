"""CARL's training losses (seed B.4): Gaussian-window LNCC, the GradICON penalty, diffusion; voxel units.

Units. The reference (ICON) works in [0,1]^D coordinates. Jacobians are dimensionless, so on a cubic grid the
GradICON value is the same in voxel units; on a non-cubic grid ICON's entry (i, j) is the voxel one times
(N_j − 1)/(N_i − 1) (its [0,1] coordinates stretch the axes differently). The jitter (N(0,1)/W in [0,1], ≈ 1
voxel) is N(0,1) voxels here; δ = 1e-3 in [0,1] is 1e-3·(N − 1) ≈ 0.1–0.17 voxel, so `delta` defaults to 0.1
voxel: below one voxel a finite difference of a linearly interpolated field is its exact cell-wise derivative.
Diffusion is ICON's mean of squared forward differences × N² (squared voxel-unit gradient), i.e. the mean
squared voxel difference here. Hence λ = 1.5 keeps the reference's balance against a (0..2) LNCC loss.
"""

from __future__ import annotations

import torch

from ..filters import gaussian_smooth
from ..transforms.sampling import identity_grid, sample, warp


def lncc_gaussian(a: torch.Tensor, b: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """1 − mean local NCC with Gaussian windows (σ voxels): cov / sqrt((relu(var_a) + 1e-5)(relu(var_b) + 1e-5)).

    0 for identical images (with structure), invariant to a positive intensity scale up to the 1e-5 guards.
    Borders: `gaussian_smooth` replicates the edge (ICON zero-pads its 4σ+1 kernel; the interior is the same)."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.float(), b.float()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return gaussian_smooth(x, sigma)

    mean_a, mean_b = blur(a), blur(b)
    cov = blur(a * b) - mean_a * mean_b
    var_a = torch.relu(blur(a * a) - mean_a**2) + 1e-5
    var_b = torch.relu(blur(b * b) - mean_b**2) + 1e-5
    return 1.0 - (cov / torch.sqrt(var_a * var_b)).mean()


def symmetric_lncc(a: torch.Tensor, b: torch.Tensor, phi_ab: torch.Tensor, phi_ba: torch.Tensor,
                   sigma: float = 4.0) -> torch.Tensor:
    """LNCC(A∘φ_AB, B) + LNCC(B∘φ_BA, A): CARL's similarity in training and in instance optimisation."""
    return lncc_gaussian(warp(a, phi_ab), b, sigma) + lncc_gaussian(warp(b, phi_ba), a, sigma)


def _compose_at(phi_ab: torch.Tensor, phi_ba: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """φ_AB(φ_BA(p)) for voxel points p (B, ndim, *S); displacements sampled with border extension."""
    inner = points + sample(phi_ba, points, padding="border")
    return inner + sample(phi_ab, inner, padding="border")


def gradicon(phi_ab: torch.Tensor, phi_ba: torch.Tensor, *, delta: float = 0.1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """GradICON: Σ_d mean(((e(p) − e(p + δ·e_d)) / δ)²), e(p) = p − φ_AB(φ_BA(p)), at jittered voxel points
    p = x + N(0, 1). Equals the mean over points of ‖∇(φ_AB ∘ φ_BA) − I‖²_F / ndim (the reference's means).

    phi_ab, phi_ba: displacements (B, ndim, *S) in voxels on grids of the same shape."""
    if phi_ab.shape != phi_ba.shape:
        raise ValueError(f"displacement shapes differ: {tuple(phi_ab.shape)} vs {tuple(phi_ba.shape)}")
    ndim = phi_ab.shape[1]
    ident = identity_grid(phi_ab.shape[2:], device=phi_ab.device, dtype=phi_ab.dtype)
    noise = torch.randn(phi_ab.shape, generator=generator, device="cpu" if generator is not None else phi_ab.device,
                        dtype=phi_ab.dtype).to(phi_ab.device)
    points = ident + noise
    error = points - _compose_at(phi_ab, phi_ba, points)
    total = phi_ab.new_zeros(())
    for d in range(ndim):
        step = torch.zeros((1, ndim) + (1,) * ndim, device=phi_ab.device, dtype=phi_ab.dtype)
        step[0, d] = delta
        shifted = points + step
        error_d = shifted - _compose_at(phi_ab, phi_ba, shifted)
        total = total + (((error - error_d) / delta) ** 2).mean()
    return total


def diffusion(displacement: torch.Tensor) -> torch.Tensor:
    """Σ_axes mean((forward difference of u along the axis)²): the squared voxel-unit gradient of u."""
    ndim = displacement.shape[1]
    return sum((displacement.diff(dim=axis + 2) ** 2).mean() for axis in range(ndim))
