"""Train VoxelMorph-diff on synthetic (SynthMorph-style) and augmented-template pairs; CPU or CUDA.

    python -m toporeg.training.train_registration --config cfg.json --out DIR [--resume] [--time-budget S]

Config (JSON, keys of `RegistrationTrainConfig`) + seed → a reproducible run (the same device; a run stopped by
`time_budget_s` is reproducible up to where it stops). Writes into DIR:
  train_log.csv (loss terms every `log_every` steps), val_log.csv (Dice before/after, folding %, per source,
  every `val_every` steps), loss_curve.png (if matplotlib), checkpoint.safetensors (model + Adam state + RNG
  states + step; `--resume` continues from it), NAME.safetensors + NAME.json (final weights + model card with
  validation Dice, folding % and how far from converged), report.json.
Imports only torch, numpy, safetensors (matplotlib optional): no SimpleITK/nibabel.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.losses import VxmDiffLoss
from ..models.voxelmorph_diff import VoxelMorphDiff
from ..models.weights import save_model
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import warp_labels
from . import common
from .dataset_cache import DEFAULT_CACHE, GRID_ORIGIN, GRID_SHAPE, GRID_SPACING, INTENSITY_PERCENTILES
from .distributed import DistributedContext
from .loop import Checkpointer, run_loop, trainer_main, write_report
from .sharding import BatchDrawer
from .synth import SynthMorphPairs
from .templates import TemplateAugmenter


@dataclass
class PairTrainConfig:
    """What every trainer on registration pairs (`Data` below) shares: data sources, schedule, loop, device."""

    name: str = "vxm_diff"
    ndim: int = 3
    model: dict = field(default_factory=dict)          # the model's kwargs (ndim is filled in)
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"                      # constant | cosine
    warmup_steps: int = 0
    schedule_by_time: bool = False                     # cosine progress also follows the time budget
    grad_clip: float = 0.0
    amp: bool = False                                  # bf16 autocast on CUDA
    time_budget_s: float | None = None
    data: dict = field(default_factory=lambda: {"synthetic": 0.5, "templates": 0.5})
    synth: dict = field(default_factory=dict)          # SynthConfig fields
    augment: dict = field(default_factory=dict)        # AugmentConfig fields
    cache: str = str(DEFAULT_CACHE)
    shape: list | None = None                          # synthetic-only grid; default: the template grid
    val_every: int = 100
    val_pairs: int = 8
    log_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    plot: bool = True                                  # loss_curve.png (needs matplotlib)
    data_seeding: str = "stream"                       # stream | per_sample (sharding.py: per_sample also seeds
    #                                                    each sample's velocity noise, so torchrun runs are exact)


@dataclass
class RegistrationTrainConfig(PairTrainConfig):
    """VoxelMorph-diff: the image term and the prior's weight (`model`: VoxelMorphDiff kwargs)."""

    image_loss: str = "mse"                            # mse (Gaussian, sigma2) | ncc | deepsim
    sigma2: float = 0.02
    lam: float = 20.0
    image_weight: float = 1.0
    bidirectional: bool = False
    ncc_window: int = 9
    deepsim_model: str | None = None                   # weights path for image_loss = deepsim


class Data:
    """Training sources and a fixed held-out validation set (different seeds; built on rank 0 only)."""

    def __init__(self, cfg: PairTrainConfig, ctx: DistributedContext, *, validation: bool = True):
        self.cfg, dev = cfg, ctx.device
        weights = {k: float(v) for k, v in cfg.data.items() if float(v) > 0}
        if not weights or set(weights) - {"synthetic", "templates"}:
            raise ValueError("config 'data' needs positive weights for 'synthetic' and/or 'templates'")
        self.p_synth = weights.get("synthetic", 0.0) / sum(weights.values())
        self.templates = self.val_templates = None
        if "templates" in weights:
            self.templates = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 2, device=dev,
                                               config=cfg.augment)
            if validation:
                self.val_templates = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 10_002,
                                                       device=dev, config=cfg.augment)
            self.shape = self.templates.shape
        else:
            self.shape = tuple(cfg.shape or (GRID_SHAPE[: cfg.ndim]))
        self.synth = SynthMorphPairs(self.shape, cfg.synth, seed=cfg.seed + 1, device=dev) if self.p_synth else None
        val_synth = SynthMorphPairs(self.shape, cfg.synth, seed=cfg.seed + 10_001, device=dev) \
            if self.p_synth and validation else None
        self.validation: dict[str, list[dict[str, torch.Tensor]]] = {}
        for source, gen in (("synthetic", val_synth), ("templates", self.val_templates)):
            if gen is not None:
                self.validation[source] = [gen.sample(1) for _ in range(cfg.val_pairs)]
        self.sources = [s for s, g in (("synthetic", self.synth), ("templates", self.templates)) if g is not None]
        self.drawer = BatchDrawer(ctx, cfg.data_seeding, cfg.batch_size)

    def sample(self, step: int) -> tuple[str, dict[str, Any]]:
        """(source, this process's part of step `step`'s batch); per_sample adds each sample's noise generator."""
        use_synth = self.synth is not None and (
            self.templates is None or float(torch.rand((), generator=common.step_generator(self.cfg.seed, step)))
            < self.p_synth)
        source, key = (self.synth, self.cfg.seed + 1) if use_synth else (self.templates, self.cfg.seed + 2)

        def draw(n: int) -> dict[str, Any]:
            batch = source.sample(n)
            if self.drawer.per_sample:
                batch["noise_generators"] = [source.rng.child()]
            return batch
        return ("synthetic" if use_synth else "templates"), self.drawer(source.rng, key, step, draw)

    def rngs(self) -> dict[str, Any]:
        """The sources' RandomFields under their checkpoint keys."""
        return {k: g.rng for k, g in (("rng.synth", self.synth), ("rng.templates", self.templates)) if g is not None}


@torch.no_grad()
def validate(model: VoxelMorphDiff, loss_fn: VxmDiffLoss, data: Data) -> dict[str, float]:
    model.eval()
    metrics: dict[str, float] = {}
    for source, pairs in data.validation.items():
        before, after, folds, losses = [], [], [], []
        for pair in pairs:
            out = model(pair["moving"], pair["fixed"], sample=False, return_inverse=loss_fn.bidirectional)
            losses.append(float(loss_fn(out, pair["moving"], pair["fixed"])["total"]))
            warped = warp_labels(pair["moving_labels"], out.displacement)
            before.append(common.mean_dice(pair["moving_labels"], pair["fixed_labels"]))
            after.append(common.mean_dice(warped, pair["fixed_labels"]))
            det = jacobian_determinant(out.displacement)
            folds.append(100.0 * folding_fraction(det[0], pair["fixed_labels"][0, 0] > 0))
        n = len(pairs)
        metrics.update({f"{source}_dice_before": sum(before) / n, f"{source}_dice": sum(after) / n,
                        f"{source}_folding_percent": sum(folds) / n, f"{source}_loss": sum(losses) / n})
    dice = [v for k, v in metrics.items() if k.endswith("_dice")]
    metrics["dice"] = sum(dice) / len(dice)
    model.train()
    return metrics


def train(cfg: RegistrationTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = Data(cfg, ctx, validation=ctx.is_main)
    model = VoxelMorphDiff(**{**cfg.model, "ndim": cfg.ndim}).to(dev)
    loss_fn = VxmDiffLoss(cfg.image_loss, sigma2=cfg.sigma2, lam=cfg.lam, image_weight=cfg.image_weight,
                          bidirectional=cfg.bidirectional, ncc_window=cfg.ncc_window, deepsim=cfg.deepsim_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    terms = ["total", "image", "kl", "kl_sigma", "kl_smooth"]
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "synthetic_fraction"] + terms)
    val_fields = ["step", "elapsed_s", "dice"] + [f"{s}_{m}" for s in data.sources
                                                   for m in ("dice_before", "dice", "folding_percent", "loss")]
    val_log = ctx.csv_log(out / "val_log.csv", val_fields)
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, data.rngs())
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    forward = ctx.wrap(model)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        source, batch = data.sample(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            res = forward(batch["moving"], batch["fixed"], return_inverse=cfg.bidirectional,
                          noise_generators=batch.get("noise_generators"))
        loss = loss_fn(res, batch["moving"], batch["fixed"])
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        fraction = torch.tensor(float(source == "synthetic"), dtype=torch.float64)
        return {"synthetic_fraction": fraction, **{k: loss[k].detach() for k in terms}}

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=lambda: validate(model, loss_fn, data),
                      checkpoint=ckpt.save, log=log, val_log=val_log, n_val=cfg.val_pairs * len(data.sources),
                      start_step=step0, elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["total"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = result.stopped_by
    card = _card(cfg, data, result.step, result.elapsed_s, dev, result.final, conv)
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png", ["total", "image", "kl"],
                                          out / "val_log.csv", [k for k in val_fields if k.endswith("dice")])
    return ctx.finish(write_report(
        out, "train registration", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget,
        extra={"files": sorted(p.name for p in out.iterdir() if not p.name.startswith("."))}))


def input_domain(ndim: int, data: Data, *,
                 preprocessing: str = "affine pre-alignment by the optimisation engine, then resampling to this grid"
                 ) -> dict[str, Any]:
    """The model card's input_domain for a network trained on `data` (the template grid, or synthetic only)."""
    shape = list(data.shape)
    return {
        "modality": "T1w MRI (brain)", "skull": "stripped", "ndim": ndim,
        "spacing_mm": [GRID_SPACING] * ndim, "shape": shape, "orientation": "RAS (canonical)",
        "grid_origin_ras_mm": list(GRID_ORIGIN[:ndim]) if data.templates is not None else None,
        "slices": "axial (i, j plane of the RAS grid)" if ndim == 2 else None,
        "field_of_view_mm": [GRID_SPACING * n for n in shape],
        "intensity": f"percentile {INTENSITY_PERCENTILES[0]}/{INTENSITY_PERCENTILES[1]} -> [0, 1], clipped",
        "preprocessing": preprocessing,
    }


def training_card(cfg: PairTrainConfig, data: Data, step: int, seconds: float, dev, *, loss: str,
                  **extra: Any) -> dict[str, Any]:
    """The model card's `training` block of every trainer on registration pairs."""
    sources = ([common.SYNTH_DATA] if data.synth is not None else []) + (
        common.TEMPLATE_DATA if data.templates is not None else [])
    return {"data": sources, "iterations": step, "batch_size": cfg.batch_size, "seconds": round(seconds, 1),
            "device": common.device_description(dev), "seed": cfg.seed, "config": dataclasses.asdict(cfg),
            "loss": loss, **extra}


def _card(cfg, data: Data, step: int, seconds: float, dev, final: dict, conv: dict) -> dict[str, Any]:
    ndim = cfg.ndim
    return {
        "task": "registration",
        "method": "VoxelMorph-diff (Dalca et al., MedIA 2019): probabilistic diffeomorphic registration",
        "training": training_card(cfg, data, step, seconds, dev, loss=(
            f"{cfg.image_loss} image term (sigma2={cfg.sigma2}) + KL to the Laplacian prior (lambda={cfg.lam}); "
            "sums normalised per full-grid voxel")),
        "validation": {"pairs_per_source": cfg.val_pairs, **final,
                       "note": "held-out draws (other seeds) of the same generators; template pairs come from "
                               "the same two templates as training (no unseen subjects)",
                       "dice_definition": "mean foreground Dice of nearest-neighbour-warped moving labels (tissue CSF/GM/WM "
                               "for templates, random labels for synthetic)",
                       "folding_definition": "% voxels with det J <= 0 inside the fixed labels' foreground"},
        "input_domain": input_domain(ndim, data),
        "outputs": {"displacement": "voxels of the fixed network grid, x_moving = x + u(x)",
                    "velocity": f"stationary, on a 1/{2 ** cfg.model.get('velocity_level', 1)} resolution grid, "
                                "in its voxels; integrated with scaling and squaring",
                    "uncertainty": "posterior velocity variance (diagonal), summed over components"},
        "converged": conv["statement"],
        "convergence": conv,
    }


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, "registration", __doc__, RegistrationTrainConfig, train,
                        lambda r: f"validation Dice {r['validation']['dice']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
