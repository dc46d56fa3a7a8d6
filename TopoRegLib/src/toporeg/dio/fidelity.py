"""Prompts (Jena et al., A.10.4): extra inner-loss terms added at inference, with no retraining.

Each term is a callable `term(displacement) -> scalar` on the full-resolution (finest level) displacement in voxels
(x_moving = x + u(x)); the solver upsamples coarser levels' fields before calling it. Pass them to
`solve(..., extra_terms=[...])`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..transforms.sampling import sample, warp


def one_hot(labels: torch.Tensor, n_classes: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer labels (B, 1, *S) -> (B, K, *S) one-hot in `dtype` (K = max label + 1 unless given)."""
    labels = labels.long()
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    return F.one_hot(labels[:, 0], k).movedim(-1, 1).to(dtype)


class LabelTerm:
    """weight · mean over foreground classes and voxels of (one-hot(fixed) − one-hot(moving)∘φ)², the moving
    one-hot warped linearly (soft labels). Label maps (B or 1, 1, *S) on the fixed and moving network grids."""

    def __init__(self, fixed_labels: torch.Tensor, moving_labels: torch.Tensor, weight: float = 1.0):
        if fixed_labels.shape[2:] != moving_labels.shape[2:]:
            raise InputError("label maps for a label prompt must share the network grid")
        k = int(max(fixed_labels.max(), moving_labels.max())) + 1
        if k < 2:
            raise InputError("a label prompt needs at least one foreground label")
        self.fixed = one_hot(fixed_labels, k)[:, 1:]
        self.moving = one_hot(moving_labels, k)[:, 1:]
        self.weight = float(weight)

    def __call__(self, displacement: torch.Tensor) -> torch.Tensor:
        warped = warp(self.moving.to(displacement), displacement)
        return self.weight * ((warped - self.fixed.to(displacement)) ** 2).mean()


class LandmarkTerm:
    """weight · mean_k |φ(x_k^fixed) − x_k^moving|² (voxels²), φ = id + u sampled linearly at the fixed points."""

    def __init__(self, fixed_points_vox: torch.Tensor, moving_points_vox: torch.Tensor, weight: float = 1.0):
        fixed = torch.as_tensor(fixed_points_vox, dtype=torch.float32)
        moving = torch.as_tensor(moving_points_vox, dtype=torch.float32)
        if fixed.dim() != 2 or fixed.shape != moving.shape or fixed.shape[0] == 0:
            raise InputError(f"landmarks must be two (K, ndim) arrays of the same shape, got {tuple(fixed.shape)} "
                             f"and {tuple(moving.shape)}")
        self.fixed, self.moving, self.weight = fixed, moving, float(weight)

    def __call__(self, displacement: torch.Tensor) -> torch.Tensor:
        fixed = self.fixed.to(displacement)
        k, ndim = fixed.shape
        coords = fixed.T.reshape(1, ndim, k, *[1] * (ndim - 1))                      # (1, ndim, K, 1[, 1])
        mapped = (coords + sample(displacement, coords, padding="border")).flatten(2)  # (B, ndim, K)
        return self.weight * ((mapped - self.moving.to(displacement).T.unsqueeze(0)) ** 2).sum(1).mean()
