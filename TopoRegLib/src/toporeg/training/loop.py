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


@dataclass
class LoopResult:
    step: int
    stopped_by: str
    final: dict[str, float]
    elapsed_s: float


def run_loop(cfg: Any, budget: common.Budget, optimizer: torch.optim.Optimizer, *,
             train_step: Callable[[int], dict[str, torch.Tensor]], validate: Callable[[], dict[str, float]],
             checkpoint: Callable[[int, float], None], log: common.CsvLog, val_log: common.CsvLog,
             n_val: int, start_step: int = 0, elapsed_before: float = 0.0) -> LoopResult:
    """Run `train_step(step)` (forward, backward, optimizer step; returns detached loss terms) until
    cfg.steps or the time budget; log means every cfg.log_every, validate every cfg.val_every, checkpoint
    every cfg.checkpoint_every, then a final validation and checkpoint."""
    step, stopped_by, lr = start_step, "steps", cfg.lr
    acc: dict[str, Any] = {}
    n_acc, val_seconds, step_seconds = 0, 0.0, 0.0

    def now() -> float:
        return elapsed_before + budget.elapsed()

    def flush() -> None:
        nonlocal acc, n_acc
        log.write({"step": step, "elapsed_s": now(), "lr": lr, **{k: v / n_acc for k, v in acc.items()}})
        acc, n_acc = {}, 0

    while step < cfg.steps:
        t_step = time.perf_counter()
        next_lr = common.next_learning_rate(cfg, budget, optimizer, step, step_seconds, val_seconds, n_val)
        if next_lr is None:
            stopped_by = "time budget"
            break
        lr = next_lr
        terms = train_step(step)
        step += 1
        dt = time.perf_counter() - t_step
        step_seconds = dt if step_seconds == 0 else 0.9 * step_seconds + 0.1 * dt
        for k, v in terms.items():  # accumulated on the device: no GPU sync per step
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            flush()
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps and budget.left() > 2 * val_seconds + 5:
            t0 = time.perf_counter()
            val_log.write({"step": step, "elapsed_s": now(), **validate()})
            val_seconds = time.perf_counter() - t0
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint(step, now())
    if n_acc:
        flush()
    final = validate()
    val_log.write({"step": step, "elapsed_s": now(), **final})
    checkpoint(step, now())
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
    return p


COMMON_OVERRIDES = ("device", "steps", "time_budget_s", "batch_size", "cache", "seed", "name", "amp")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in COMMON_OVERRIDES if hasattr(args, k)}


def resume_from(path: Path, model, optimizer, restore: Callable[[dict[str, torch.Tensor]], None]
                ) -> tuple[int, float]:
    """Load a checkpoint if present: (step, elapsed seconds before), RNG states handed to `restore`."""
    from ..models.weights import load_checkpoint
    if not path.exists():
        return 0, 0.0
    meta, extra = load_checkpoint(path, model, optimizer)
    restore(extra)
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0))


def resume_with_data_rng(resume: bool, path: Path, model, optimizer, data_rng, logs: list[common.CsvLog]
                         ) -> tuple[int, float]:
    """Start at step 0, or (`resume`) from the checkpoint `path` when present, restoring the torch RNG and the data
    source's RNG (`data_rng`, saved as "rng.data" by `save_with_data_rng`); drop the log rows the run will redo.
    Returns (step, elapsed seconds before)."""
    def restore(extra: dict[str, torch.Tensor]) -> None:
        data_rng.set_state(extra["rng.data"])
        torch.set_rng_state(extra["rng.torch"])

    step0, elapsed_before = resume_from(path, model, optimizer, restore) if resume else (0, 0.0)
    for log in logs:
        log.truncate_after(step0)
    return step0, elapsed_before


def save_with_data_rng(path: Path, model, optimizer, data_rng, cfg: Any, step: int, elapsed: float) -> None:
    """Checkpoint model, optimizer, the torch and data RNG states, step, elapsed seconds and the config."""
    from ..models.weights import save_checkpoint
    save_checkpoint(path, model, optimizer, tensors={"rng.torch": torch.get_rng_state(), "rng.data": data_rng.state()},
                    meta={"step": step, "elapsed_s": elapsed, "config": dataclasses.asdict(cfg)})


def write_report(out: Path, task: str, cfg: Any, *, steps: int, stopped_by: str, dev: torch.device,
                 validation: dict[str, float], conv: dict[str, Any], weights: Path, card: Path, png: bool,
                 budget: common.Budget, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trainers' report.json (`extra` keys go after "card"); returns the report."""
    report = {"task": task, "name": cfg.name, "out": str(out), "steps": steps, "stopped_by": stopped_by,
              "device": common.device_description(dev), "validation": validation, "converged": conv["statement"],
              "weights": weights.name, "card": card.name, **(extra or {}), "loss_curve_png": png,
              "versions": common.versions(), "settings": dataclasses.asdict(cfg),
              "timings": {"total_seconds": round(budget.elapsed(), 3)}}
    common.write_json(out / "report.json", report)
    return report
