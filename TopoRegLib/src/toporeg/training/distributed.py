"""Data-parallel training under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

    torchrun --standalone --nproc-per-node 2 -m toporeg.cli.main train registration --config C --out D

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (or with WORLD_SIZE=1) every method below is a
no-op and a run is exactly the single-process code path. Under torchrun:
- `batch_size` is the global batch; each process computes an equal share (`shard`), and DDP averages the
  gradients, which for per-sample-mean losses equals the full-batch gradient (batch-pooled statistics are
  completed over all shards by `pooled_batch`, see `toporeg.reductions`);
- rank 0 alone decides what depends on its wall clock (learning rate, stopping on the time budget) and
  broadcasts it (`decide`): ranks that decided on their own clocks would run different numbers of steps and
  deadlock in the next gradient all-reduce;
- rank 0 alone validates (with the unwrapped model: no collectives) and writes logs, checkpoints, weights,
  card and report; the other processes' torch RNG states go into its checkpoints (`gather_rng_states`).
Docs: docs/training.md.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from .. import reductions
from ..errors import InputError
from . import common

TIMEOUT = timedelta(minutes=30)  # collectives wait this long, e.g. while rank 0 validates alone


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run; the default is a single process on `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False  # False when the caller initialised the process group (and will destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def init(cls, device: str = "auto", env: Mapping[str, str] | None = None) -> "DistributedContext":
        """From torchrun's environment: nccl when the process uses CUDA (cuda:LOCAL_RANK), else gloo."""
        env = os.environ if env is None else env
        if not dist.is_initialized() and int(env.get("WORLD_SIZE", "1")) <= 1:
            return cls(device=common.resolve_device(device))
        local = int(env.get("LOCAL_RANK", "0"))
        dev = process_device(device, local)
        owns = not dist.is_initialized()
        if owns:
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend, timeout=TIMEOUT, device_id=dev if dev.type == "cuda" else None)
        return cls(dist.get_rank(), dist.get_world_size(), local, dev, dist.get_backend(), owns)

    # --- work split ---------------------------------------------------------------------------------------------
    def shard(self, global_batch: int) -> tuple[int, int]:
        """[start, stop) of this process's samples in every step's global batch (equal shares required)."""
        if global_batch % self.world_size:
            raise InputError(f"batch_size {global_batch} is not divisible by the {self.world_size} processes: "
                             "every process needs an equal share (then DDP's gradient average is the full-batch "
                             f"gradient); use a multiple of {self.world_size}")
        n = global_batch // self.world_size
        return self.rank * n, (self.rank + 1) * n

    def wrap(self, model: nn.Module, method: str = "forward", *, find_unused: bool = False) -> Callable[..., Any]:
        """`model.<method>` as the training step should call it: under torchrun through DistributedDataParallel
        (only calls through DDP's forward synchronise gradients, hence the adapter for other methods).
        BatchNorm becomes SyncBatchNorm under NCCL; under gloo (CPU) its statistics stay per process.
        `find_unused`: the model has parameters that get no gradient (DDP must then look for them every step)."""
        if not self.distributed:
            return getattr(model, method)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and self.backend == "nccl":
            if nn.SyncBatchNorm.convert_sync_batchnorm(model) is not model:  # children replaced in place
                raise TypeError("a bare BatchNorm model cannot be converted in place")
        elif has_bn:
            self.note("BatchNorm statistics are per process under gloo (SyncBatchNorm needs NCCL GPUs): the run "
                      "differs from single-process training at the same global batch")
        module = model if method == "forward" else _Method(model, method)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)

    def seed_process(self, seed: int, step: int = 0) -> None:
        """Give ranks > 0 their own torch RNG stream (dropout, sampling noise); rank 0 keeps the single-process
        stream. Model weights are initialised before this, identically everywhere."""
        if self.rank:
            torch.manual_seed(common.mix_seed(seed, step, self.rank))

    def process_seed(self, seed: int) -> int:
        """`seed` on rank 0, a seed of this process's own elsewhere (per-step generators)."""
        return seed if self.rank == 0 else common.mix_seed(seed, self.rank)

    # --- collectives (all processes call them at the same points) -----------------------------------------------
    def decide(self, value: float | None) -> float | None:
        """Rank 0's `value` (None allowed) in every process."""
        if not self.distributed:
            return value
        t = torch.tensor([math.nan if value is None else float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        v = float(t[0])
        return None if math.isnan(v) else v

    def mean_over_processes(self, values: dict[str, Any]) -> dict[str, Any]:
        """Per-key means over the processes (logged loss terms: the global batch's, not rank 0's share)."""
        if not self.distributed or not values:
            return values
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(self.device).reshape(()) for v in values.values()])
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(values, t.tolist())}

    def gather_rng_states(self) -> dict[str, torch.Tensor]:
        """The torch (and CUDA) RNG states of ranks > 0 as checkpoint tensors "rng.torch.rank<r>" (rank 0's are
        the checkpoint's own "rng.torch"/"rng.cuda")."""
        if not self.distributed:
            return {}
        mine = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, mine)
        return {f"rng.{k}.rank{r}": v for r, s in enumerate(states) if r for k, v in s.items()}

    def restore_rng(self, extra: dict[str, torch.Tensor], seed: int, step: int) -> None:
        """This process's RNG states from a checkpoint's tensors (`gather_rng_states` for ranks > 0)."""
        suffix = f".rank{self.rank}" if self.rank else ""
        if f"rng.torch{suffix}" not in extra:
            self.note(f"the checkpoint has no RNG state for rank {self.rank} (written by a run with another number "
                      "of processes): its noise restarts from a fresh seed")
            self.seed_process(seed, step)
            return
        torch.set_rng_state(extra[f"rng.torch{suffix}"])
        if self.device.type == "cuda" and f"rng.cuda{suffix}" in extra:
            torch.cuda.set_rng_state(extra[f"rng.cuda{suffix}"], self.device)

    def pooled_batch(self) -> AbstractContextManager:
        """Around a training step: batch statistics (`toporeg.reductions.batch_sum`) summed over all shards."""
        return reductions.pooled_batch(self._all_reduce_sums) if self.distributed else nullcontext()

    def _all_reduce_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The value is the sum over processes; the gradient flows into the local part, scaled by the world size
        because DDP then averages the processes' gradients (so the total is d(loss of the whole batch))."""
        total = sums.detach().clone()
        dist.all_reduce(total)
        if not sums.requires_grad:
            return total
        return total + self.world_size * (sums - sums.detach())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def finish(self, result: Any) -> Any:
        """End of a run: wait for rank 0's files, release the process group if this context created it."""
        if self.distributed:
            dist.barrier()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        return result

    # --- rank 0's outputs ---------------------------------------------------------------------------------------
    def csv_log(self, path: Path, fields: list[str]) -> common.CsvLog:
        """The log on rank 0; a log that writes nothing on the others."""
        return common.CsvLog(path, fields) if self.is_main else _NoLog(path, fields)

    def describe(self) -> dict[str, Any]:
        """For report.json (empty for a single process, so its report is unchanged)."""
        if not self.distributed:
            return {}
        return {"distributed": {"processes": self.world_size, "backend": self.backend}}

    def note(self, message: str) -> None:
        if self.is_main:
            print(f"toporeg train: {message}", file=sys.stderr)


def process_device(name: str, local_rank: int) -> torch.device:
    """The device of the process with `local_rank` on its node: cuda:LOCAL_RANK (for auto/cuda) or cpu."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise InputError(f"--device {name} under torchrun: each process uses cuda:LOCAL_RANK; give auto or cuda "
                         "(and choose the GPUs with CUDA_VISIBLE_DEVICES), or cpu")
    if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"process with LOCAL_RANK {local_rank} needs a GPU but "
                           f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} are visible")
    return torch.device("cuda", local_rank)


class _Method(nn.Module):
    """Calls `model.<name>` as its forward, so that DDP sees (and synchronises) e.g. `training_loss`."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.name)(*args, **kwargs)


class _NoLog(common.CsvLog):
    """A CsvLog that writes nothing (processes other than rank 0)."""

    def __init__(self, path: Path, fields: list[str]):  # noqa: D107 - no file is created
        self.path, self.fields = Path(path), fields

    def write(self, row: dict[str, Any]) -> None:
        pass

    def rows(self) -> list[dict[str, str]]:
        return []

    def truncate_after(self, step: int) -> None:
        pass
