"""Which samples a training process draws: this process's share of every step's global batch.

The global batch of step s must be the same samples whatever the number of processes, so a run under torchrun
equals a single-process run of the same config. Config key `data_seeding` chooses how:

- "stream" (default; the single-process behaviour of every trainer so far): one random stream per data source,
  drawn a whole batch at a time (a batch shares some draws, e.g. its noise level). Under torchrun every process
  draws the whole global batch and keeps its own slice: exact, but each process pays for generating all of it.
- "per_sample": sample i of step s comes from its own seed mix(source seed, s, i), so a process draws only its
  samples ("truly sharded"). The stream differs from "stream" (another, equally valid, random run); resuming
  needs no data RNG state. Trainers may draw a sample's model noise from the same seed (registration does).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import InputError
from .common import mix_seed
from .distributed import DistributedContext
from .synth import RandomFields

DATA_SEEDING = ("stream", "per_sample")

Batch = dict[str, Any]


class BatchDrawer:
    """`drawer(rng, key, step, draw)`: this process's part of step `step`'s global batch of `batch_size`, where
    `draw(n)` makes n samples from `rng` (a data source's RandomFields) and `key` is that source's seed."""

    def __init__(self, ctx: DistributedContext, mode: str, batch_size: int):
        if mode not in DATA_SEEDING:
            raise InputError(f"unknown data_seeding '{mode}' (known: {', '.join(DATA_SEEDING)})")
        self.mode, self.batch_size = mode, batch_size
        self.start, self.stop = ctx.shard(batch_size)
        self.per_sample = mode == "per_sample"

    def __call__(self, rng: RandomFields, key: int, step: int, draw: Callable[[int], Batch]) -> Batch:
        if self.per_sample:
            parts = []
            for i in range(self.start, self.stop):
                rng.reseed(mix_seed(key, step, i))
                parts.append(draw(1))
            return concat_batches(parts)
        batch = draw(self.batch_size)
        if self.stop - self.start == self.batch_size:
            return batch
        return slice_batch(batch, self.start, self.stop, self.batch_size)


def concat_batches(parts: list[Batch]) -> Batch:
    """One batch from batches: tensors concatenated on dim 0, lists joined, other values must agree."""
    out: Batch = {}
    for key, first in parts[0].items():
        values = [p[key] for p in parts]
        if isinstance(first, torch.Tensor):
            out[key] = torch.cat(values)
        elif isinstance(first, list):
            out[key] = [v for value in values for v in value]
        elif all(v == first for v in values):
            out[key] = first
        else:
            raise ValueError(f"batch entry '{key}' differs between samples and cannot be joined: {values}")
    return out


def slice_batch(batch: Batch, start: int, stop: int, size: int) -> Batch:
    """Samples [start, stop) of a batch of `size`: tensors and lists with that leading length are sliced, other
    entries (per-batch values such as a plane name) kept."""
    def cut(value: Any) -> Any:
        if isinstance(value, (torch.Tensor, list)) and len(value) == size:
            return value[start:stop]
        return value
    return {k: cut(v) for k, v in batch.items()}
