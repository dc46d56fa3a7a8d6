"""Train Neuralizer (Czolbe & Dalca 2023): one few-shot multi-task 2D model; CPU or CUDA.

    toporeg train neuralizer --out DIR [--config cfg.json] [--resume] [--time-budget S] [--seed N] ...

Without --config the packaged `configs/neuralizer_2d_cpu.json` is used (small, about an hour on 2 CPU cores).
Every step draws a batch of episodes from `toporeg.neuralizer.data.NeuralizerData` (each sample its own task, a
context set of N ~ U{1, max_context} other subject draws, task augmentations); the held-out label protocols and
tasks are never drawn, nor is the held-out subject. Loss: soft Dice (mask tasks) or MSE/(2σ²) (image tasks).
Validation on fixed episodes of the training distribution (another seed, N = 4): Dice on mask tasks, PSNR on
image tasks. Outputs as the other trainers (train_log.csv, val_log.csv, loss_curve.png, checkpoint,
NAME.safetensors + NAME.json card, report.json).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..models.weights import save_model
from ..neuralizer.data import NeuralizerData
from ..neuralizer.losses import SIGMA2, task_loss
from ..neuralizer.model import Neuralizer
from ..neuralizer.scoring import EpisodeScores
from ..neuralizer.tasks import TASKS
from . import common
from .loop import Checkpointer, common_arguments, overrides, run_loop, write_report
from .neuralizer_card import model_card
from .sharding import BatchDrawer

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class NeuralizerTrainConfig:
    name: str = "neuralizer_2d"
    model: dict = field(default_factory=dict)   # Neuralizer kwargs: channels, levels
    data: dict = field(default_factory=dict)    # NeuralizerData kwargs: crop, planes, tasks, protocols, subjects
    max_context: int = 8
    sigma2: float = SIGMA2
    steps: int = 20000
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    schedule_by_time: bool = True
    grad_clip: float = 1.0
    amp: bool = False
    time_budget_s: float | None = None
    cache: str | None = None                   # default: NeuralizerData's
    val_every: int = 250
    val_episodes: int = 48
    val_context: int = 4
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    plot: bool = True
    data_seeding: str = "stream"               # stream only: an episode batch shares its plane (sharding.py)


def _data(cfg: NeuralizerTrainConfig, seed: int, dev: torch.device) -> NeuralizerData:
    kwargs = dict(cfg.data)
    if cfg.cache:
        kwargs["cache"] = cfg.cache
    return NeuralizerData(seed=seed, device=dev, **kwargs)


def validation_episodes(cfg: NeuralizerTrainConfig, dev: torch.device) -> list[dict[str, Any]]:
    val = _data(cfg, cfg.seed + 10_007, dev)
    return [val.episode(min(8, cfg.val_episodes - i), cfg.val_context) for i in range(0, cfg.val_episodes, 8)]


@torch.no_grad()
def validate(model: Neuralizer, episodes: list[dict[str, Any]], sigma2: float) -> dict[str, float]:
    model.eval()
    scores = EpisodeScores()
    for ep in episodes:
        y = model(ep["target_in"], ep["context_in"], ep["context_out"])
        loss, _ = task_loss(y, ep["target_out"], ep["is_segment"], sigma2)
        scores.add(y, ep["target_out"], ep["is_segment"], ep["task"], float(loss))
    model.train()
    return scores.summary()


def train(cfg: NeuralizerTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    if cfg.data_seeding != "stream":
        raise InputError("Neuralizer training supports data_seeding 'stream' only: the samples of an episode batch "
                         "share one plane (and slice shape)")
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = _data(cfg, cfg.seed + 6, dev)
    drawer = BatchDrawer(ctx, cfg.data_seeding, cfg.batch_size)
    val_episodes = validation_episodes(cfg, dev) if ctx.is_main else []
    torch.manual_seed(cfg.seed)
    model = Neuralizer(**cfg.model).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "loss", "dice_loss", "mse_loss"])
    val_log = ctx.csv_log(out / "val_log.csv", ["step", "elapsed_s", *EpisodeScores.FIELDS, *TASKS])
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, {"rng.data": data.rng})
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    forward = ctx.wrap(model, find_unused=True)  # the last level's context-stream update feeds no output

    def train_step(step: int) -> dict[str, torch.Tensor]:
        n_context = 1 + (cfg.seed * 7919 + step * 104729) % cfg.max_context  # stateless: resume-exact
        ep = drawer(data.rng, cfg.seed + 6, step, lambda n: data.episode(n, n_context))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            y = forward(ep["target_in"], ep["context_in"], ep["context_out"])
        loss, terms = task_loss(y.float(), ep["target_out"], ep["is_segment"], cfg.sigma2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return {"loss": loss.detach(), **terms}

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step,
                      validate=lambda: validate(model, val_episodes, cfg.sigma2), checkpoint=ckpt.save,
                      log=log, val_log=val_log, n_val=len(val_episodes), start_step=step0,
                      elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = result.stopped_by
    card = model_card(cfg, model, data, result, dev, conv)
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png", ["loss"],
                                          out / "val_log.csv", ["dice", "psnr"])
    return ctx.finish(write_report(
        out, "train neuralizer", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget))


def main(argv: list[str] | None = None) -> int:
    p = common_arguments("toporeg train neuralizer", __doc__.splitlines()[0])
    p.add_argument("--max-context", type=int, dest="max_context", help="largest context set drawn in training")
    args = p.parse_args(argv)
    config = args.config or CONFIG_DIR / "neuralizer_2d_cpu.json"
    cfg = common.load_config(NeuralizerTrainConfig, config, {**overrides(args), "max_context": args.max_context})
    report = train(cfg, args.out, resume=args.resume)
    if not report:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    v = report["validation"]
    print(f"{report['name']}: {report['steps']} steps ({report['stopped_by']}), validation Dice {v['dice']:.3f}, "
          f"PSNR {v['psnr']:.1f} dB; {report['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
