"""The step loop every trainer shares: time-budgeted learning-rate schedule, CSV logging, periodic validation,
checkpoints, resume, and the common command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import common
from .distributed import DistributedContext
from .sharding import DATA_SEEDING


@dataclass
class LoopResult:
    step: int
    stopped_by: str
    final: dict[str, float]
    elapsed_s: float


def run_loop(cfg: Any, budget: common.Budget, optimizer: torch.optim.Optimizer, *,
             train_step: Callable[[int], dict[str, torch.Tensor]], validate: Callable[[], dict[str, float]],
             checkpoint: Callable[[int, float, dict[str, torch.Tensor]], None], log: common.CsvLog,
             val_log: common.CsvLog, n_val: int, start_step: int = 0, elapsed_before: float = 0.0,
             ctx: DistributedContext | None = None) -> LoopResult:
    """Run `train_step(step)` (forward, backward, optimizer step; returns detached loss terms) until
    cfg.steps or the time budget; log means every cfg.log_every, validate every cfg.val_every, checkpoint
    every cfg.checkpoint_every, then a final validation and checkpoint.

    Under torchrun (`ctx`) every process runs this loop in lockstep: rank 0 decides the learning rate and when to
    stop, logged terms are averaged over the processes, and only rank 0 validates and writes (`checkpoint` gets
    the other ranks' RNG states; `validate` must not use collectives). Single process: `ctx` changes nothing."""
    ctx = ctx or DistributedContext()
    step, stopped_by, lr = start_step, "steps", cfg.lr
    acc: dict[str, Any] = {}
    n_acc, val_seconds, step_seconds = 0, 0.0, 0.0

    def now() -> float:
        return elapsed_before + budget.elapsed()

    def flush() -> None:
        nonlocal acc, n_acc
        means = ctx.mean_over_processes({k: v / n_acc for k, v in acc.items()})
        log.write({"step": step, "elapsed_s": now(), "lr": lr, **means})
        acc, n_acc = {}, 0

    def save() -> None:
        peers = ctx.gather_rng_states()
        if ctx.is_main:
            checkpoint(step, now(), peers)

    while step < cfg.steps:
        t_step = time.perf_counter()
        next_lr = common.next_learning_rate(cfg, budget, optimizer, step, step_seconds, val_seconds, n_val) \
            if ctx.is_main else None
        next_lr = ctx.decide(next_lr)
        if next_lr is None:
            stopped_by = "time budget"
            break
        if not ctx.is_main:
            common.set_learning_rate(optimizer, next_lr)
        lr = next_lr
        with ctx.pooled_batch():
            terms = train_step(step)
        step += 1
        dt = time.perf_counter() - t_step
        step_seconds = dt if step_seconds == 0 else 0.9 * step_seconds + 0.1 * dt
        for k, v in terms.items():  # accumulated on the device: no GPU sync per step
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            flush()
        if (ctx.is_main and cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps
                and budget.left() > 2 * val_seconds + 5):
            t0 = time.perf_counter()
            val_log.write({"step": step, "elapsed_s": now(), **validate()})
            val_seconds = time.perf_counter() - t0
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save()
    if n_acc:
        flush()
    final = validate() if ctx.is_main else {}
    val_log.write({"step": step, "elapsed_s": now(), **final})
    save()
    return LoopResult(step, stopped_by, final, now())


def common_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="JSON config (keys of the trainer's config dataclass)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 …")
    p.add_argument("--steps", type=int)
    p.add_argument("--time-budget", type=float, dest="time_budget_s", help="seconds; stops gracefully")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--cache", help="template cache (.npz from toporeg.training.dataset_cache)")
    p.add_argument("--seed", type=int)
    p.add_argument("--name", help="file name of the final weights (NAME.safetensors + NAME.json)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA")
    p.add_argument("--data-seeding", dest="data_seeding", choices=DATA_SEEDING,
                   help="stream (default): batches from one random stream; per_sample: every sample from its own "
                        "seed, so torchrun processes draw only their share (docs/training.md)")
    return p


COMMON_OVERRIDES = ("device", "steps", "time_budget_s", "batch_size", "cache", "seed", "name", "amp", "data_seeding")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in COMMON_OVERRIDES if hasattr(args, k)}


class Checkpointer:
    """The run's checkpoint: model, optimizer, step, elapsed seconds, config, and every RNG the run draws from
    (torch's, CUDA's, the data sources' `RandomFields` under their checkpoint keys in `data_rngs`, and under
    torchrun the other processes' torch RNGs), so that `--resume` continues exactly. Save on rank 0 only (the
    unwrapped model: no "module." prefixes); every process resumes from the same file."""

    def __init__(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Any,
                 ctx: DistributedContext, data_rngs: dict[str, Any]):
        self.path, self.model, self.optimizer, self.cfg, self.ctx = Path(path), model, optimizer, cfg, ctx
        self.data_rngs = data_rngs

    def resume(self, resume: bool, logs: list[common.CsvLog]) -> tuple[int, float]:
        """Start at step 0 (ranks > 0 get their own torch RNG stream), or (`resume`) from the checkpoint when
        present; drop the log rows the run will redo. Returns (step, elapsed seconds before)."""
        from ..models.weights import load_checkpoint
        step, elapsed = 0, 0.0
        if resume and self.path.exists():
            meta, extra = load_checkpoint(self.path, self.model, self.optimizer)
            step, elapsed = int(meta["step"]), float(meta.get("elapsed_s", 0.0))
            for key, rng in self.data_rngs.items():
                if key in extra:
                    rng.set_state(extra[key])
            self.ctx.restore_rng(extra, self.cfg.seed, step)
        else:
            self.ctx.seed_process(self.cfg.seed)
        for log in logs:
            log.truncate_after(step)
        return step, elapsed

    def save(self, step: int, elapsed: float, peers: dict[str, torch.Tensor] | None = None) -> None:
        from ..models.weights import save_checkpoint
        tensors = {"rng.torch": torch.get_rng_state(), **{k: rng.state() for k, rng in self.data_rngs.items()}}
        dev = self.ctx.device
        if dev.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
        meta = {"step": step, "elapsed_s": elapsed, "config": dataclasses.asdict(self.cfg)}
        if self.ctx.distributed:
            meta["processes"] = self.ctx.world_size
        save_checkpoint(self.path, self.model, self.optimizer, tensors={**tensors, **(peers or {})}, meta=meta)


def write_report(out: Path, task: str, cfg: Any, *, steps: int, stopped_by: str, ctx: DistributedContext,
                 validation: dict[str, float], conv: dict[str, Any], weights: Path, card: Path, png: bool,
                 budget: common.Budget, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trainers' report.json (`extra` keys go after "card"; under torchrun the process count); returns it."""
    report = {"task": task, "name": cfg.name, "out": str(out), "steps": steps, "stopped_by": stopped_by,
              "device": common.device_description(ctx.device), **ctx.describe(), "validation": validation,
              "converged": conv["statement"],
              "weights": weights.name, "card": card.name, **(extra or {}), "loss_curve_png": png,
              "versions": common.versions(), "settings": dataclasses.asdict(cfg),
              "timings": {"total_seconds": round(budget.elapsed(), 3)}}
    common.write_json(out / "report.json", report)
    return report


def trainer_main(argv: list[str] | None, trainer: str, doc: str | None, config_cls: type, train: Callable[..., dict],
                 summary: Callable[[dict], str]) -> int:
    """`toporeg train TRAINER --config … --out …`: the common flags, the run, one summary line (rank 0 only)."""
    args = common_arguments(f"toporeg train {trainer}", (doc or "").splitlines()[0]).parse_args(argv)
    cfg = common.load_config(config_cls, args.config, overrides(args))
    report = train(cfg, args.out, resume=args.resume)
    if not report:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    print(f"{report['name']}: {report['steps']} steps ({report['stopped_by']}), {summary(report)}; "
          f"{report['converged']}")
    return 0
