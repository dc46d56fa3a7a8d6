"""Train a segmentation model with uncertainty (U-Net, deep ensemble, MC-dropout, probabilistic U-Net); CPU or CUDA.

    toporeg train segmentation --model unet|ensemble|mcdropout|probunet --task brain|tissue|ambiguous --out DIR
                               [--config cfg.json] [--ndim 2|3] [--hold-out colin27|mni152|none] [--resume] ...

Without --config the packaged `configs/seg_{method}_{ndim}d.json` is used (2D: small, ~9 min on 2 CPU cores;
3D: for a GPU). Data: `toporeg.segmentation.data` (templates minus `hold_out`, skull-stripped and whole heads,
SynthSeg-style synthesis, simulated annotators on the ambiguous task). The ensemble's 4 members are initialised
from their own seeds and trained in the same steps on the same batches (or, on the ambiguous task, member m on
annotator m: disjoint annotator sets); it is saved as ONE file. Validation on held-out augmentations of the
training templates: Dice per class, error-detection AUROC of the entropy, ECE, NLL (+ GED and diversity on the
ambiguous task). Outputs as the other trainers (train_log.csv, val_log.csv, loss_curve.png, checkpoint,
NAME.safetensors + NAME.json card, report.json).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.weights import save_model
from ..segmentation.data import SegmentationData
from ..segmentation.data_cache import SEG_CACHE
from ..segmentation.models import METHODS, DeepEnsemble, PlainUNet, SegmentationModel, build_segmentation_model
from ..segmentation.scoring import ScoreAccumulator, majority
from . import common
from .dataset_cache import DEFAULT_CACHE
from .loop import Checkpointer, common_arguments, overrides, run_loop, write_report
from .segmentation_card import model_card
from .sharding import BatchDrawer

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class SegTrainConfig:
    name: str | None = None                 # default seg_{task}_{method} (+ _3d)
    task: str = "tissue"                    # brain | tissue | ambiguous
    method: str = "unet"                    # unet | ensemble | mcdropout | probunet
    ndim: int = 2
    model: dict = field(default_factory=dict)  # kwargs: channels, norm, dropout, latent_dim, beta, n_members,
    #                                            dice_weight (loss = CE + w·(1 − soft Dice); default 1, 0 = CE only)
    steps: int = 4000
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 50
    schedule_by_time: bool = True
    grad_clip: float = 5.0
    amp: bool = False
    time_budget_s: float | None = None
    augment: dict = field(default_factory=dict)   # TemplateAugmenter (affine, elastic, gamma, bias, noise)
    data: dict = field(default_factory=dict)      # SegDataConfig (appearance mix, head, intensity, annotators)
    cache: str = str(DEFAULT_CACHE)
    seg_cache: str = str(SEG_CACHE)
    hold_out: str | None = "colin27"        # template never seen in training (the benchmark's test head)
    val_every: int = 200
    val_images: int = 32
    val_samples: int = 8
    log_every: int = 20
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    plot: bool = True
    data_seeding: str = "stream"            # stream | per_sample (sharding.py)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}' (known: {', '.join(METHODS)})")
        if self.hold_out in ("", "none", "None"):
            self.hold_out = None
        if not self.name:
            self.name = f"seg_{self.task}_{self.method}" + ("_3d" if self.ndim == 3 else "")


def member_seeds(cfg: SegTrainConfig, n: int) -> list[int]:
    return [cfg.seed * 1000 + 101 * (m + 1) for m in range(n)]


def build_model(cfg: SegTrainConfig, n_classes: int) -> SegmentationModel:
    """The model of `cfg.method`; ensemble members each from their own seed (reproducible, independent)."""
    kwargs = {"ndim": cfg.ndim, "n_classes": n_classes, **cfg.model}
    if cfg.method == "ensemble":
        n = int(kwargs.pop("n_members", 4))
        members = []
        for seed in member_seeds(cfg, n):
            torch.manual_seed(seed)
            members.append(PlainUNet(**kwargs))
        model: SegmentationModel = DeepEnsemble(members)
    else:
        torch.manual_seed(cfg.seed)
        model = build_segmentation_model(cfg.method, **kwargs)
    torch.manual_seed(cfg.seed + 1)
    return model


def model_target(batch: dict[str, Any]) -> torch.Tensor:
    """All annotators on the ambiguous task (the models pick one, the ensemble member m its own), else labels."""
    return batch["annotators"] if "annotators" in batch else batch["target"]


@torch.no_grad()
def validate(model: SegmentationModel, batches: list[dict[str, Any]], n_classes: int, samples: int, seed: int,
             names: dict[int, str]) -> dict[str, float]:
    """Pooled metrics on fixed validation batches; sampling uses its own generator and a forked global RNG, so
    validation never shifts the training stream (resume stays exact)."""
    dev = next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        acc = ScoreAccumulator(n_classes)
        n = 1 if model.method == "unet" else samples
        for batch in batches:
            g = torch.Generator(device=dev).manual_seed(seed)
            probs = model.sample_probabilities(batch["image"], n, g)
            ann = batch.get("annotators")
            acc.add(probs, majority(ann) if ann is not None else batch["target"], ann)
        return acc.summary(names)


def _validation_batches(cfg: SegTrainConfig, dev: torch.device) -> tuple[SegmentationData, list[dict[str, Any]]]:
    val = SegmentationData(cfg.task, cache=cfg.cache, seg_cache=cfg.seg_cache, ndim=cfg.ndim, seed=cfg.seed + 10_006,
                           device=dev, augment=cfg.augment, data=cfg.data, hold_out=cfg.hold_out)
    chunk = 8 if cfg.ndim == 2 else 1
    batches = []
    for i in range(0, cfg.val_images, chunk):
        b = val.sample(min(chunk, cfg.val_images - i))
        batches.append({k: v for k, v in b.items() if k in ("image", "target", "annotators")})
    return val, batches


def train(cfg: SegTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = SegmentationData(cfg.task, cache=cfg.cache, seg_cache=cfg.seg_cache, ndim=cfg.ndim, seed=cfg.seed + 6,
                            device=dev, augment=cfg.augment, data=cfg.data, hold_out=cfg.hold_out)
    drawer = BatchDrawer(ctx, cfg.data_seeding, cfg.batch_size)
    val_batches = _validation_batches(cfg, dev)[1] if ctx.is_main else []
    model = build_model(cfg, data.n_classes).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    members = [f"ce_member{i}" for i in range(len(getattr(model, "members", [])))]
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "loss", "ce", "dice", "kl", *members])
    val_fields = ["dice", *[f"dice_{v}" for k, v in data.labels.items() if k], "auroc", "ece", "nll",
                  "entropy_correct", "entropy_wrong", "error_rate"]
    val_fields += ["ged", "diversity"] if cfg.task == "ambiguous" else []
    val_log = ctx.csv_log(out / "val_log.csv", ["step", "elapsed_s", *val_fields])
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, {"rng.data": data.rng})
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    training_loss = ctx.wrap(model, "training_loss")

    def train_step(step: int) -> dict[str, torch.Tensor]:
        batch = drawer(data.rng, cfg.seed + 6, step, data.sample)
        # stateless: resume-exact; each process its own stream (probunet latents, dropout, annotator picks)
        gen = torch.Generator(device=dev).manual_seed(ctx.process_seed(cfg.seed * 1_000_003 + step))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, metrics = training_loss(batch["image"], model_target(batch), gen)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return metrics

    def run_validation() -> dict[str, float]:
        result = validate(model, val_batches, data.n_classes, cfg.val_samples, cfg.seed + 7, data.labels)
        model.train()
        return result

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=run_validation, checkpoint=ckpt.save,
                      log=log, val_log=val_log, n_val=len(val_batches) * max(1, cfg.val_samples // 2),
                      start_step=step0, elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = result.stopped_by
    card = model_card(cfg, model, data, result, dev, conv,
                      member_seeds(cfg, len(model.members)) if cfg.method == "ensemble" else None)
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png", ["loss", "ce"],
                                          out / "val_log.csv", ["dice", "auroc", "ece"])
    return ctx.finish(write_report(
        out, "train segmentation", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget))


def default_config(method: str, ndim: int) -> Path:
    return CONFIG_DIR / f"seg_{method}_{ndim}d.json"


def main(argv: list[str] | None = None) -> int:
    p = common_arguments("toporeg train segmentation", __doc__.splitlines()[0])
    p.add_argument("--model", dest="method", choices=list(METHODS), help="uncertainty method (default unet)")
    p.add_argument("--task", choices=["brain", "tissue", "ambiguous"])
    p.add_argument("--ndim", type=int, choices=[2, 3], help="2D slice-wise (default) or 3D")
    p.add_argument("--hold-out", dest="hold_out", help="template left out of training (colin27, mni152, none)")
    p.add_argument("--seg-cache", dest="seg_cache",
                   help="segmentation cache (python -m toporeg.segmentation.data_cache)")
    args = p.parse_args(argv)
    config = args.config or default_config(args.method or "unet", args.ndim or 2)
    extra = {"method": args.method, "task": args.task, "ndim": args.ndim, "hold_out": args.hold_out,
             "seg_cache": args.seg_cache}
    cfg = common.load_config(SegTrainConfig, config, {**overrides(args), **extra})
    report = train(cfg, args.out, resume=args.resume)
    if not report:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    v = report["validation"]
    extra_txt = f", GED {v['ged']:.3f}" if "ged" in v else ""
    print(f"{report['name']}: {report['steps']} steps ({report['stopped_by']}), validation Dice {v['dice']:.3f}, "
          f"AUROC {v['auroc']:.3f}, ECE {v['ece']:.3f}{extra_txt}; {report['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
