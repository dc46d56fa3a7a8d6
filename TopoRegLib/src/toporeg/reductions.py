"""Voxel reductions shared by registration similarities and training losses (torch only).

Batch pooling: a few training losses and fits pool statistics over the whole batch (batch soft Dice, the
topology prior's closed-form α, β, its Σ_f initialisation). When a data-parallel run splits the batch across
processes, `batch_sum` / `batch_mean` complete those statistics over every shard (the trainer installs the
reduction with `pooled_batch`), so the result equals single-process training at the same global batch.
Outside `pooled_batch` (single process, validation, inference) they are the plain local reductions.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

_POOL: ContextVar[Callable[[torch.Tensor], torch.Tensor] | None] = ContextVar("toporeg_batch_pool", default=None)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values`, each voxel scaled by `weight` (broadcast; None = all ones)."""
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)


def pooling() -> bool:
    """Whether batch statistics are being pooled across processes (inside `pooled_batch`)."""
    return _POOL.get() is not None


def batch_sum(sums: torch.Tensor) -> torch.Tensor:
    """Sums over this process's part of a batch → sums over the whole batch (identity unless pooling)."""
    pool = _POOL.get()
    return sums if pool is None else pool(sums)


def batch_mean(values: torch.Tensor, dim: int) -> torch.Tensor:
    """`values.mean(dim)` where `dim` runs over batch samples (and voxels), completed over every shard."""
    if not pooling():
        return values.mean(dim)
    count = torch.full_like(values.select(dim, 0), float(values.shape[dim]))
    total = batch_sum(torch.stack([values.sum(dim), count]))
    return total[0] / total[1]


@contextmanager
def pooled_batch(pool: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within this block, `batch_sum` hands its sums to `pool` (e.g. an all-reduce over processes)."""
    token = _POOL.set(pool)
    try:
        yield
    finally:
        _POOL.reset(token)
