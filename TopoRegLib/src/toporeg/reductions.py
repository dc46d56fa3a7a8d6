"""Voxel reductions shared by registration similarities and training losses (torch only)."""

from __future__ import annotations

import torch


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values`, each voxel scaled by `weight` (broadcast; None = all ones)."""
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)
