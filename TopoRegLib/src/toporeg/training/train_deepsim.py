"""Train a DeepSim feature extractor: DeepSim-seg (tissue segmentation U-Net, cross-entropy) or DeepSim-ae.

    python -m toporeg.training.train_deepsim --config cfg.json --out DIR [--resume] [--time-budget S]

Data: augmented MNI152/Colin27 templates with tissue labels (0 bg, 1 CSF, 2 GM, 3 WM) from the template cache.
Same conventions and outputs as `train_registration` (train_log.csv, val_log.csv, loss_curve.png,
checkpoint.safetensors, NAME.safetensors + NAME.json, report.json). torch/numpy/safetensors only.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..models.deepsim import DeepSimExtractor
from ..models.weights import save_model
from . import common
from .dataset_cache import DEFAULT_CACHE, GRID_ORIGIN, GRID_SPACING, INTENSITY_PERCENTILES, TISSUE_LABELS
from .loop import Checkpointer, common_arguments, overrides, run_loop, write_report
from .sharding import BatchDrawer
from .templates import TemplateAugmenter


@dataclass
class DeepSimTrainConfig:
    name: str = "deepsim_seg"
    ndim: int = 3
    kind: str = "seg"                                   # seg | ae
    channels: list = field(default_factory=lambda: [32, 64, 128])
    batch_norm: bool = True
    dropout: float = 0.0
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    schedule_by_time: bool = False
    amp: bool = False
    time_budget_s: float | None = None
    augment: dict = field(default_factory=dict)
    cache: str = str(DEFAULT_CACHE)
    val_every: int = 100
    val_images: int = 8
    log_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    plot: bool = True                                  # loss_curve.png (needs matplotlib)
    data_seeding: str = "stream"                       # stream | per_sample (sharding.py)


@torch.no_grad()
def validate(model: DeepSimExtractor, images: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    losses, dice = [], []
    for item in images:
        pred = model(item["image"])
        if model.kind == "seg":
            losses.append(float(F.cross_entropy(pred, item["labels"][:, 0])))
            dice.append(common.mean_dice(pred.argmax(1, keepdim=True), item["labels"]))
        else:
            losses.append(float(F.mse_loss(pred, item["image"])))
    model.train()
    out = {"loss": sum(losses) / len(losses)}
    if dice:
        out["dice"] = sum(dice) / len(dice)
    return out


def train(cfg: DeepSimTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 3, device=dev, config=cfg.augment)
    drawer = BatchDrawer(ctx, cfg.data_seeding, cfg.batch_size)
    val_set = []
    if ctx.is_main:
        held_out = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 10_003, device=dev, config=cfg.augment)
        val_set = [held_out.images(1) for _ in range(cfg.val_images)]
    model = DeepSimExtractor(cfg.ndim, 1, cfg.channels, kind=cfg.kind, n_classes=data.n_labels,
                             batch_norm=cfg.batch_norm, dropout=cfg.dropout).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "loss"])
    val_log = ctx.csv_log(out / "val_log.csv", ["step", "elapsed_s", "loss", "dice"])
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, {"rng.data": data.rng})
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    forward = ctx.wrap(model)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        batch = drawer(data.rng, cfg.seed + 3, step, data.images)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = forward(batch["image"])
        pred = pred.float()
        loss = F.cross_entropy(pred, batch["labels"][:, 0]) if cfg.kind == "seg" else F.mse_loss(pred, batch["image"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=lambda: validate(model, val_set),
                      checkpoint=ckpt.save, log=log, val_log=val_log, n_val=cfg.val_images, start_step=step0,
                      elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    step, stopped_by, final = result.step, result.stopped_by, result.final
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = stopped_by
    shape = list(data.shape)
    card = {
        "task": "feature extractor (DeepSim)",
        "method": f"DeepSim-{cfg.kind} (Czolbe et al., MIDL 2021 / MedIA): "
                  + ("tissue segmentation U-Net, cross-entropy" if cfg.kind == "seg" else "autoencoder, MSE"),
        "features": {"layers": "encoder stage outputs", "resolutions": [f"1/{2 ** (i + 1)}" for i in
                                                                        range(len(cfg.channels))],
                     "channels": list(cfg.channels)},
        "labels": {str(k): v for k, v in TISSUE_LABELS.items()} if cfg.kind == "seg" else None,
        "training": {"data": common.TEMPLATE_DATA, "iterations": step, "batch_size": cfg.batch_size,
                     "seconds": round(result.elapsed_s, 1), "device": common.device_description(dev),
                     "seed": cfg.seed, "config": dataclasses.asdict(cfg)},
        "validation": {"images": cfg.val_images, **final,
                       "note": "held-out augmentations (other seed) of the same two templates (no unseen subjects)"},
        "input_domain": {"modality": "T1w MRI (brain)", "skull": "stripped", "ndim": cfg.ndim,
                         "spacing_mm": [GRID_SPACING] * cfg.ndim, "shape": shape, "orientation": "RAS (canonical)",
                         "grid_origin_ras_mm": list(GRID_ORIGIN[: cfg.ndim]),
                         "intensity": f"percentile {INTENSITY_PERCENTILES[0]}/{INTENSITY_PERCENTILES[1]} -> [0, 1], "
                                      "clipped"},
        "converged": conv["statement"],
        "convergence": conv,
    }
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png", ["loss"],
                                          out / "val_log.csv", ["dice"] if cfg.kind == "seg" else ["loss"])
    return ctx.finish(write_report(out, "train deepsim", cfg, steps=step, stopped_by=stopped_by, ctx=ctx,
                                   validation=final, conv=conv, weights=weights, card=card_path, png=png,
                                   budget=budget))


def main(argv: list[str] | None = None) -> int:
    args = common_arguments("toporeg train deepsim", __doc__.splitlines()[0]).parse_args(argv)
    cfg = common.load_config(DeepSimTrainConfig, args.config, overrides(args))
    report = train(cfg, args.out, resume=args.resume)
    if not report:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    metric = report["validation"].get("dice", report["validation"]["loss"])
    print(f"{report['name']}: {report['steps']} steps ({report['stopped_by']}), validation "
          f"{'Dice' if 'dice' in report['validation'] else 'loss'} {metric:.3f}; {report['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
