"""Train DIO's feature network through its registration solver (Jena et al.); CPU or CUDA.

    python -m toporeg.training.train_dio --config cfg.json --out DIR [--resume] [--time-budget S]

Each step: features of fixed and moving images (one shared `DIOFeatureNet`), the multi-scale solver (free-form
displacement, no gradients), one phantom step per level (Jacobian-free backprop), then image + soft-Dice losses on
every active level. Levels join the loss progressively (`level_start`, fractions of the run, as DIO's curriculum).
Data, logs, checkpoints, resume and report are those of `train_registration` (same sources, same held-out pairs).
Validation: Dice before/after and folding % with the training solver AND with the SVF solver swapped in.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..dio.features import DIOFeatureNet
from ..dio.losses import LevelTargets, OuterLoss
from ..dio.solver import SolverSettings, phantom_step, solve
from ..models.weights import save_model
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import warp_labels
from . import common
from .loop import Checkpointer, run_loop, trainer_main, write_report
from .train_registration import Data, PairTrainConfig, input_domain, training_card


@dataclass
class DIOTrainConfig(PairTrainConfig):
    name: str = "dio_2d"
    ndim: int = 2
    model: dict = field(default_factory=dict)          # DIOFeatureNet kwargs (ndim is filled in)
    solver: dict = field(default_factory=dict)         # SolverSettings fields used in training (and by default after)
    image_loss: str = "mse"                            # mse | ncc
    ncc_window: int = 9
    image_weight: float = 1.0
    dice_weight: float = 1.0
    level_start: list = field(default_factory=lambda: [0.0, 0.02, 0.05])  # run fraction at which each level joins
    backprop_both: bool = False                        # False: one random branch (fixed or moving) carries gradients
    steps: int = 2000
    batch_size: int = 2
    lr: float = 3e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 20
    schedule_by_time: bool = True
    grad_clip: float = 10.0
    data: dict = field(default_factory=lambda: {"synthetic": 0.2, "templates": 0.8})
    val_every: int = 100
    checkpoint_every: int = 200


def _settings(cfg: DIOTrainConfig) -> SolverSettings:
    settings = SolverSettings(**cfg.solver)
    n_scales = len(_scales(cfg))
    if len(settings.iterations) != n_scales or len(cfg.level_start) != n_scales:
        raise ValueError(f"config: solver.iterations and level_start need one entry per scale ({n_scales})")
    return settings


def _model_kwargs(cfg: DIOTrainConfig) -> dict[str, Any]:
    return {**cfg.model, "ndim": cfg.ndim}


def features(net, fixed: torch.Tensor, moving: torch.Tensor, branch: str) -> tuple[list, list]:
    """Feature lists of both images; `branch` ('both', 'fixed', 'moving') says which carry gradients."""
    if branch == "both":
        both = net(torch.cat([fixed, moving]))
        n = fixed.shape[0]
        return [f[:n].float() for f in both], [f[n:].float() for f in both]
    with torch.no_grad():
        other = net(moving if branch == "fixed" else fixed)
    own = net(fixed if branch == "fixed" else moving)
    pair = (own, other) if branch == "fixed" else (other, own)
    return [f.float() for f in pair[0]], [f.float() for f in pair[1]]


@torch.no_grad()
def validate(net: DIOFeatureNet, data: Data, settings: SolverSettings) -> dict[str, float]:
    net.eval()
    metrics: dict[str, float] = {}
    solvers = {"": settings, "_svf": settings.with_(transform="svf")}
    for source, pairs in data.validation.items():
        rows: dict[str, list[float]] = {}
        for pair in pairs:
            ff, fm = net(pair["fixed"]), net(pair["moving"])
            mask = pair["fixed_labels"][0, 0] > 0
            rows.setdefault("dice_before", []).append(common.mean_dice(pair["moving_labels"], pair["fixed_labels"]))
            for tag, solver in solvers.items():
                disp = solve(ff, fm, solver).displacement
                rows.setdefault(f"dice{tag}", []).append(
                    common.mean_dice(warp_labels(pair["moving_labels"], disp), pair["fixed_labels"]))
                rows.setdefault(f"folding_percent{tag}", []).append(
                    100.0 * folding_fraction(jacobian_determinant(disp)[0], mask))
        metrics.update({f"{source}_{k}": sum(v) / len(v) for k, v in rows.items()})
    for tag in solvers:
        values = [v for k, v in metrics.items() if k.endswith(f"_dice{tag}")]
        metrics[f"dice{tag}"] = sum(values) / len(values)
    net.train()
    return metrics


def train(cfg: DIOTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    settings = _settings(cfg)
    data = Data(cfg, ctx, validation=ctx.is_main)
    net = DIOFeatureNet(**_model_kwargs(cfg)).to(dev)
    loss_fn = OuterLoss(cfg.image_loss, cfg.image_weight, cfg.dice_weight, cfg.ncc_window)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    terms = ["total", "image", "dice_loss", "levels", "inner_iterations"]
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "synthetic_fraction"] + terms)
    val_fields = ["step", "elapsed_s", "dice", "dice_svf"] + [
        f"{s}_{m}" for s in data.sources
        for m in ("dice_before", "dice", "folding_percent", "dice_svf", "folding_percent_svf")]
    val_log = ctx.csv_log(out / "val_log.csv", val_fields)
    ckpt = Checkpointer(out / "checkpoint.safetensors", net, optimizer, cfg, ctx, data.rngs())
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    forward = ctx.wrap(net)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        source, batch = data.sample(step)
        progress = max(step / max(cfg.steps, 1), budget.fraction() if cfg.schedule_by_time else 0.0)
        n_active = max(sum(progress >= start for start in cfg.level_start), 1)
        solver = settings.with_(iterations=settings.iterations[:n_active])
        draw = float(torch.rand((), generator=common.step_generator(cfg.seed + 3, step)))
        branch = "both" if cfg.backprop_both else ("fixed" if draw < 0.5 else "moving")
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            ff, fm = features(forward, batch["fixed"], batch["moving"], branch)
        ff, fm = ff[:n_active], fm[:n_active]
        result = solve(ff, fm, solver)
        disps = phantom_step(ff, fm, result, solver)
        targets = LevelTargets.build(batch, net.scales[:n_active])
        loss = loss_fn(disps, targets)
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        extra = {"synthetic_fraction": float(source == "synthetic"), "levels": float(n_active),
                 "inner_iterations": float(sum(result.iterations))}
        return {**{k: torch.tensor(v, dtype=torch.float64) for k, v in extra.items()},
                **{k: v.detach() for k, v in loss.items()}}

    net.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=lambda: validate(net, data, settings),
                      checkpoint=ckpt.save, log=log, val_log=val_log, n_val=2 * cfg.val_pairs * len(data.sources),
                      start_step=step0, elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["total"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = result.stopped_by
    card = _card(cfg, settings, data, result.step, result.elapsed_s, dev, result.final, conv)
    weights, card_path = save_model(net, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png",
                                          ["total", "image", "dice_loss"],
                                          out / "val_log.csv", [k for k in val_fields if "dice" in k])
    return ctx.finish(write_report(
        out, "train dio", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget,
        extra={"files": sorted(p.name for p in out.iterdir() if not p.name.startswith("."))}))


def _card(cfg: DIOTrainConfig, settings: SolverSettings, data: Data, step: int, seconds: float, dev, final: dict,
          conv: dict) -> dict[str, Any]:
    return {
        "task": "registration",
        "method": "DIO, Deep Implicit Optimization (R. Jena, P. Chaudhari, J. C. Gee, 'Deep Implicit Optimization "
                  "for Robust and Flexible Image Registration', arXiv 2406.07361; MedIA 103 (2025) 103577): "
                  "per-image multi-scale features registered by an iterative solver, trained through its optimum "
                  "with Jacobian-free backprop (one phantom step)",
        "training": training_card(cfg, data, step, seconds, dev, loss=(
            f"{cfg.image_weight} x {cfg.image_loss} image term + {cfg.dice_weight} x (1 - soft Dice) of the warped "
            "one-hot labels, averaged over the active levels (coarse levels on downsampled images and blurred one-hot "
            f"labels); levels join at run fractions {cfg.level_start}; solver: {settings.transform}")),
        "validation": {"pairs_per_source": cfg.val_pairs, **final,
                       "note": "held-out draws (other seeds) of the same generators; template pairs come from "
                               "the same two templates as training (no unseen subjects); '_svf' = the same "
                               "features with the SVF (diffeomorphic) solver swapped in at test time",
                       "dice_definition": "mean foreground Dice of nearest-neighbour-warped moving labels",
                       "folding_definition": "% voxels with det J <= 0 inside the fixed labels' foreground"},
        "input_domain": input_domain(cfg.ndim, data),
        "solver": settings.as_dict(),
        "outputs": {"features": f"{cfg.model.get('channels', 16)} channels per scale at 1/"
                                f"{', 1/'.join(map(str, _scales(cfg)))} of the network grid (coarse -> fine)",
                    "displacement": "from the solver: voxels of the fixed network grid, x_moving = x + u(x)"},
        "converged": conv["statement"],
        "convergence": conv,
    }


def _scales(cfg: DIOTrainConfig) -> list[int]:
    return [int(s) for s in cfg.model.get("scales", (4, 2, 1))]


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, "dio", __doc__, DIOTrainConfig, train,
                        lambda r: f"validation Dice {r['validation']['dice']:.3f} (svf {r['validation']['dice_svf']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
