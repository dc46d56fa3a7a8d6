"""What the DIO solver optimises for each transform model, and how a step of it is normalised.

- displacement: u itself (free-form, the training solver);
- svf: a stationary velocity v, displacement exp(v) by scaling and squaring (diffeomorphic);
- affine: p = [B | t] (B, ndim, ndim+1) with φ(x) = c + (I + B/R)(x − c) + t, c the grid centre and R half the
  largest grid size, so a unit change of any entry moves some voxel by about one voxel. That makes Adam's
  per-entry steps comparable between the linear part and the translation.

Normalisation (steps of at most `lr` voxels, FireANTs-style): the direction a = m̂ / D, with Adam's first moment m̂
and D from its second moment v̂, is divided by max(1, max_x |δφ_a(x)|), the largest per-voxel displacement it
would cause (dense: per-voxel vector norm; affine: over the grid corners, where a linear map's displacement is
largest). Affine: D = √v̂ per parameter (Adam). Dense fields: D = max_x √(Σ_c v̂_c(x)), ONE number per sample, the
largest per-voxel RMS gradient; per-element Adam moves voxels with a weak, noisy gradient as fast as well-matched
ones, which on 2D brain slices gave 10-20 % folded voxels and lower Dice than this (0.2-2.5 %; measured with the
image itself and with an untrained network as features). Either way the step does not depend on the feature
scale, so learned features are not tied to one step size, and it shrinks as the gradient fades near the optimum.
"""

from __future__ import annotations

import itertools

import torch

from ..filters import gaussian_smooth
from ..transforms.integration import integrate_svf, invert_displacement
from ..transforms.sampling import identity_grid, resize_displacement

DENSE = ("displacement", "svf")


def _view(x: torch.Tensor, ndim: int) -> torch.Tensor:
    return x.view(1, -1, *([1] * ndim))


def initial(transform: str, batch: int, shape: tuple[int, ...], like: torch.Tensor,
            start: torch.Tensor | None = None) -> torch.Tensor:
    """Parameters of the identity, or of `start`: a dense field at any resolution (spanning the same extent), or an
    affine voxel matrix (ndim+1)² / (B, ndim(+1), ndim+1) in voxels of the grid `shape`."""
    ndim = len(shape)
    if transform in DENSE:
        if start is None:
            return like.new_zeros((batch, ndim, *shape))
        return resize_displacement(start.to(like), shape).expand(batch, ndim, *shape).clone()
    if start is None:
        return like.new_zeros((batch, ndim, ndim + 1))
    matrix = start.to(like)[..., :ndim, :].expand(batch, ndim, ndim + 1)
    return affine_params(matrix, shape)


def _centre_radius(shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, float]:
    centre = torch.tensor([(n - 1) / 2.0 for n in shape], device=like.device, dtype=like.dtype)
    return centre, max(max(shape) / 2.0, 1.0)


def affine_matrix(params: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, ndim, ndim+1) voxel matrix [A | b] (x ↦ A x + b) of the centred parameters."""
    ndim = len(shape)
    centre, radius = _centre_radius(shape, params)
    lin = torch.eye(ndim, device=params.device, dtype=params.dtype) + params[..., :ndim] / radius
    trans = params[..., ndim] + centre - (lin @ centre.unsqueeze(-1)).squeeze(-1)
    return torch.cat([lin, trans.unsqueeze(-1)], dim=-1)


def affine_params(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `affine_matrix`."""
    ndim = len(shape)
    centre, radius = _centre_radius(shape, matrix)
    lin = matrix[..., :ndim]
    trans = matrix[..., ndim] - centre + (lin @ centre.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(ndim, device=matrix.device, dtype=matrix.dtype)
    return torch.cat([(lin - eye) * radius, trans.unsqueeze(-1)], dim=-1)


def homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    """(B, ndim, ndim+1) -> (B, ndim+1, ndim+1)."""
    last = torch.zeros_like(matrix[:, :1])
    last[..., -1] = 1.0
    return torch.cat([matrix, last], dim=1)


def matrix_displacement(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, ndim, *shape) voxel displacement A x + b − x."""
    ndim = len(shape)
    grid = identity_grid(shape, device=matrix.device, dtype=matrix.dtype)
    trans = matrix[..., ndim].view(*matrix.shape[:2], *[1] * ndim)
    coords = torch.einsum("brc,xc...->br...", matrix[..., :ndim], grid) + trans
    return coords - grid


def displacement(transform: str, params: torch.Tensor, shape: tuple[int, ...], svf_steps: int) -> torch.Tensor:
    """The voxel displacement of the parameters on the grid `shape` (differentiable)."""
    if transform == "displacement":
        return params
    if transform == "svf":
        return integrate_svf(params, svf_steps)
    return matrix_displacement(affine_matrix(params, shape), shape)


def inverse(transform: str, params: torch.Tensor, shape: tuple[int, ...], svf_steps: int) -> torch.Tensor:
    """Inverse displacement: exp(−v), fixed-point inversion, or the exact inverse matrix."""
    if transform == "svf":
        return integrate_svf(-params, svf_steps)
    if transform == "displacement":
        return invert_displacement(params)
    inv = torch.linalg.inv(homogeneous(affine_matrix(params, shape)))
    return matrix_displacement(inv[:, :-1], shape)


def resize(transform: str, params: torch.Tensor, old: tuple[int, ...], new: tuple[int, ...]) -> torch.Tensor:
    """Parameters on the next (finer) level grid, spanning the same extent (values rescaled to its voxels)."""
    if transform in DENSE:
        return resize_displacement(params, new)
    ratio = torch.tensor([(m - 1) / max(n - 1, 1) for n, m in zip(old, new)], device=params.device,
                         dtype=params.dtype)
    scale = torch.diag_embed(torch.cat([ratio, ratio.new_ones(1)]))
    inv_scale = torch.diag_embed(torch.cat([1.0 / ratio, ratio.new_ones(1)]))
    matrix = (scale @ homogeneous(affine_matrix(params, old)) @ inv_scale)[:, :-1]
    return affine_params(matrix, new)


def largest_shift(transform: str, direction: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B,) largest per-voxel displacement a parameter change `direction` causes (voxels)."""
    if transform in DENSE:
        return direction.norm(dim=1).flatten(1).amax(1)
    ndim = len(shape)
    centre, radius = _centre_radius(shape, direction)
    corners = torch.tensor(list(itertools.product(*[(0.0, n - 1.0) for n in shape])), device=direction.device,
                           dtype=direction.dtype) - centre                       # (2^ndim, ndim)
    shifts = direction[..., ndim].unsqueeze(1) + torch.einsum("brc,kc->bkr", direction[..., :ndim] / radius, corners)
    return shifts.norm(dim=-1).amax(1)


def adam_denominator(transform: str, second_moment: torch.Tensor) -> torch.Tensor:
    """D of the module docstring from the bias-corrected second moment v̂ (broadcastable to the parameters)."""
    if transform not in DENSE:
        return second_moment.sqrt()
    peak = second_moment.sum(1).flatten(1).amax(1).sqrt()
    return peak.view(-1, *[1] * (second_moment.dim() - 1))


def normalised_step(transform: str, direction: torch.Tensor, shape: tuple[int, ...], lr: float) -> torch.Tensor:
    """lr · direction / max(1, largest_shift): at most `lr` voxels anywhere (the scale is not differentiated)."""
    scale = largest_shift(transform, direction.detach(), shape).clamp_min(1.0)
    return lr * direction / scale.view(-1, *[1] * (direction.dim() - 1))


def smooth(transform: str, field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a dense gradient or field (σ in voxels); affine parameters pass through."""
    return gaussian_smooth(field, sigma) if transform in DENSE and sigma > 0 else field
