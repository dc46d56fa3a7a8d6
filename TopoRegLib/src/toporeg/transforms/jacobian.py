"""Jacobian determinant of x ↦ x + u(x) and the folding fraction: one implementation for every method.

Signed central differences (one-sided at the borders), never absolute values. The determinant is
computed in voxel units: for φ_phys = A∘φ_vox∘A⁻¹ with a linear A, det(Dφ_phys) = det(Dφ_vox), so
it equals the determinant in physical millimetres on any (oblique, anisotropic) grid.
"""

from __future__ import annotations

import torch


def jacobian_matrix(displacement: torch.Tensor) -> torch.Tensor:
    """(B, ndim, ndim, *S): J[:, r, c] = δ_rc + ∂u_r/∂x_c."""
    ndim = displacement.shape[1]
    spatial_dims = tuple(range(2, ndim + 2))
    grads = torch.gradient(displacement, dim=spatial_dims) if min(displacement.shape[2:]) > 1 else None
    if grads is None:
        raise ValueError("every spatial axis needs at least 2 voxels to differentiate a field")
    jac = torch.stack(grads, dim=2)  # (B, ndim(r), ndim(c), *S)
    eye = torch.eye(ndim, device=displacement.device, dtype=displacement.dtype)
    return jac + eye.view(1, ndim, ndim, *([1] * ndim))


def jacobian_determinant(displacement: torch.Tensor) -> torch.Tensor:
    """(B, *S) signed determinant of the Jacobian of id + u."""
    jac = jacobian_matrix(displacement)
    j = jac.movedim((1, 2), (-2, -1))
    if j.shape[-1] == 2:
        return j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    return (j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
            - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
            + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0]))


def folding_fraction(det: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Fraction (0..1) of voxels with det J ≤ 0, inside `mask` when given (else the whole grid)."""
    folded = det <= 0
    if mask is not None:
        mask = mask.to(torch.bool).reshape(det.shape)
        total = int(mask.sum())
        return float((folded & mask).sum()) / total if total else 0.0
    return float(folded.float().mean())
