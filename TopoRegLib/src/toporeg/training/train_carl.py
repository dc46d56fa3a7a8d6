"""Train CARL (coordinate attention + refinement U-Nets) label-free on template/synthetic pairs; CPU or CUDA.

    python -m toporeg.training.train_carl --config cfg.json --out DIR [--resume] [--time-budget S]

Loss (seed B.4): LNCC(A∘φ_AB, B) + LNCC(B∘φ_BA, A) + λ·R, R = diffusion of both fields for the first
`warmup_steps_diffusion` steps (stabilises the attention's small support), then GradICON(φ_AB, φ_BA). Augment:
the moving image (and, for a random subset, the fixed one) is translated by large random integer shifts with
zeros outside, so the network learns offsets far beyond a displacement U-Net's reach (the point of CARL).
Data, logs, checkpoints, resume and report are `train_registration`'s (its `Data`, `run_loop`, `Checkpointer`).
Validation: held-out pairs as drawn, and the same pairs with the moving image translated far (up to
±`val_shift_fraction` of the field of view); Dice before/after and folding % for both.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..carl import CARL, diffusion, gradicon
from ..carl.losses import symmetric_lncc
from ..models.weights import save_model
from ..transforms.jacobian import folding_fraction, jacobian_determinant
from ..transforms.sampling import warp_labels
from . import common
from .loop import Checkpointer, run_loop, trainer_main, write_report
from .train_registration import Data, PairTrainConfig, input_domain, training_card


@dataclass
class CarlTrainConfig(PairTrainConfig):
    name: str = "carl"
    ndim: int = 3
    model: dict = field(default_factory=dict)          # CARL kwargs (ndim is filled in)
    lam: float = 1.5                                   # weight of diffusion (warm-up) and GradICON
    warmup_steps_diffusion: int = 1500
    lncc_sigma: float = 4.0
    gradicon_delta: float = 0.1                        # voxels (≈ the reference's 1e-3 in [0,1] units)
    shift_fraction: float = 0.25                       # max |integer shift| per axis, fraction of the grid
    moving_shift_prob: float = 0.8
    fixed_shift_prob: float = 0.3
    val_shift_fraction: float = 0.25                   # translated validation: |shift| in [1/2, 1] × this
    steps: int = 50000
    batch_size: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"                      # constant | cosine
    warmup_steps: int = 0                              # learning-rate warm-up
    schedule_by_time: bool = False
    grad_clip: float = 0.0
    data: dict = field(default_factory=lambda: {"templates": 1.0})
    val_every: int = 200
    checkpoint_every: int = 500


def translate(image: torch.Tensor, shift: list[int]) -> torch.Tensor:
    """image ∘ (x ↦ x + shift) for integer voxel shifts, zeros outside: content moves by −shift, and the
    displacement that undoes it is +shift."""
    out = torch.zeros_like(image)
    src, dst = [], []
    for s, n in zip(shift, image.shape[2:]):
        s = max(-n, min(n, int(s)))
        src.append(slice(max(s, 0), n + min(s, 0)))
        dst.append(slice(max(-s, 0), n - max(s, 0)))
    out[(..., *dst)] = image[(..., *src)]
    return out


def _random_shifts(gen: torch.Generator, shape: tuple[int, ...], fraction: float, lo: float = 0.0) -> list[int]:
    """One integer shift per axis, |shift| uniform in [lo, 1] × fraction × n, random sign."""
    mags = lo + (1.0 - lo) * torch.rand(len(shape), generator=gen)
    signs = torch.randint(0, 2, (len(shape),), generator=gen) * 2 - 1
    return [int(round(float(m) * fraction * n)) * int(sg) for m, sg, n in zip(mags, signs, shape)]


def augment_shifts(batch: dict[str, Any], cfg: CarlTrainConfig, step: int) -> dict[str, torch.Tensor]:
    """Translate each moving image (probability moving_shift_prob) and fixed image (fixed_shift_prob) by its own
    random integer shift; stateless per step, so a resumed run draws the same shifts."""
    gen = common.step_generator(cfg.seed + 7, step)
    moving, fixed = batch["moving"].clone(), batch["fixed"].clone()
    shape = tuple(moving.shape[2:])
    for b in range(moving.shape[0]):
        for image, prob in ((moving, cfg.moving_shift_prob), (fixed, cfg.fixed_shift_prob)):
            if float(torch.rand((), generator=gen)) < prob:
                image[b:b + 1] = translate(image[b:b + 1], _random_shifts(gen, shape, cfg.shift_fraction))
    return {"moving": moving, "fixed": fixed}


def carl_loss(phi_ab: torch.Tensor, phi_ba: torch.Tensor, a: torch.Tensor, b: torch.Tensor, cfg: CarlTrainConfig,
              step: int) -> dict[str, torch.Tensor]:
    """Symmetric LNCC + λ·(diffusion before `warmup_steps_diffusion`, else GradICON); both regularisers logged."""
    similarity = symmetric_lncc(a, b, phi_ab, phi_ba, cfg.lncc_sigma)
    smooth = 0.5 * (diffusion(phi_ab) + diffusion(phi_ba))
    gradicon_phase = step >= cfg.warmup_steps_diffusion
    with torch.set_grad_enabled(gradicon_phase and torch.is_grad_enabled()):
        icon = gradicon(phi_ab, phi_ba, delta=cfg.gradicon_delta)
    reg = icon if gradicon_phase else smooth
    return {"total": similarity + cfg.lam * reg, "similarity": similarity, "diffusion": smooth, "gradicon": icon,
            "gradicon_phase": torch.tensor(float(gradicon_phase))}


@torch.no_grad()
def validate(model: CARL, data: Data, cfg: CarlTrainConfig) -> dict[str, float]:
    """Dice before/after and folding % on the held-out pairs, as drawn and with the moving image translated far."""
    model.eval()
    metrics: dict[str, float] = {}
    for source, pairs in data.validation.items():
        for variant in ("", "_translated"):
            before, after, folds, shifts = [], [], [], []
            for i, pair in enumerate(pairs):
                moving, labels = pair["moving"], pair["moving_labels"]
                if variant:
                    gen = torch.Generator().manual_seed(cfg.seed + 20_000 + i)
                    shift = _random_shifts(gen, tuple(moving.shape[2:]), cfg.val_shift_fraction, lo=0.5)
                    moving, labels = translate(moving, shift), translate(labels, shift)
                    shifts.append(sum(s * s for s in shift) ** 0.5)
                u = model(moving, pair["fixed"])
                before.append(common.mean_dice(labels, pair["fixed_labels"]))
                after.append(common.mean_dice(warp_labels(labels, u), pair["fixed_labels"]))
                folds.append(100.0 * folding_fraction(jacobian_determinant(u)[0], pair["fixed_labels"][0, 0] > 0))
            n = len(pairs)
            key = f"{source}{variant}"
            metrics.update({f"{key}_dice_before": sum(before) / n, f"{key}_dice": sum(after) / n,
                            f"{key}_folding_percent": sum(folds) / n})
            if shifts:
                metrics[f"{key}_shift_voxels"] = sum(shifts) / n
    for variant in ("", "translated_"):
        dice = [v for k, v in metrics.items() if k.endswith("_dice") and ("_translated" in k) == bool(variant)]
        metrics[f"{variant}dice"] = sum(dice) / len(dice)
    model.train()
    return metrics


def train(cfg: CarlTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = Data(cfg, ctx, validation=ctx.is_main)
    model = CARL(**{**cfg.model, "ndim": cfg.ndim}).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    terms = ["total", "similarity", "diffusion", "gradicon", "gradicon_phase"]
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr"] + terms)
    val_fields = ["step", "elapsed_s", "dice", "translated_dice"] + [
        f"{s}{v}_{m}" for s in data.sources for v in ("", "_translated")
        for m in ("dice_before", "dice", "folding_percent")] + [f"{s}_translated_shift_voxels" for s in data.sources]
    val_log = ctx.csv_log(out / "val_log.csv", val_fields)
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, data.rngs())
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    use_amp = bool(cfg.amp and dev.type == "cuda")
    forward_pair = ctx.wrap(model, "forward_pair")

    def train_step(step: int) -> dict[str, torch.Tensor]:
        _, batch = data.sample(step)
        pair = augment_shifts(batch, cfg, step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            phi_ab, phi_ba = forward_pair(pair["moving"], pair["fixed"])
        loss = carl_loss(phi_ab.float(), phi_ba.float(), pair["moving"], pair["fixed"], cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return {k: loss[k].detach() for k in terms}

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=lambda: validate(model, data, cfg),
                      checkpoint=ckpt.save, log=log, val_log=val_log, n_val=2 * cfg.val_pairs * len(data.sources),
                      start_step=step0, elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = [r for r in log.rows() if float(r["gradicon_phase"]) == 1.0] or log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["total"]) for r in rows])
    conv = common.add_validation_trend(conv, val_log.rows(), "dice")
    conv["stopped_by"] = result.stopped_by
    card = _card(cfg, data, result.step, result.elapsed_s, dev, result.final, conv)
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png",
                                          ["total", "similarity", "diffusion", "gradicon"], out / "val_log.csv",
                                          [k for k in val_fields if k.endswith("dice")])
    return ctx.finish(write_report(
        out, "train carl", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget,
        extra={"files": sorted(p.name for p in out.iterdir() if not p.name.startswith("."))}))


def _card(cfg: CarlTrainConfig, data: Data, step: int, seconds: float, dev, final: dict, conv: dict
          ) -> dict[str, Any]:
    return {
        "task": "registration",
        "method": "CARL (H. Greer, L. Tian, F.-X. Vialard, R. Kwitt, R. San José Estépar, M. Niethammer, 'CARL: A "
                  "Framework for Equivariant Image Registration'): "
                  "coordinate attention at 1/4 resolution, [W,U]-equivariant to integer translations, refined by "
                  "two displacement U-Nets (1/2, full)",
        "training": training_card(cfg, data, step, seconds, dev, loss=(
            f"symmetric 1 - LNCC (Gaussian sigma {cfg.lncc_sigma} voxels) + {cfg.lam} x diffusion (first "
            f"{cfg.warmup_steps_diffusion} steps), then + {cfg.lam} x GradICON (finite differences, delta "
            f"{cfg.gradicon_delta} voxel)"), augmentation=(
            f"moving translated with probability {cfg.moving_shift_prob} (fixed: {cfg.fixed_shift_prob}) by integer "
            f"shifts up to {cfg.shift_fraction:.0%} of the grid per axis, zeros outside; plus the data sources' own "
            "augmentation")),
        "validation": {"pairs_per_source": cfg.val_pairs, **final,
                       "note": "held-out draws (other seeds) of the same generators; '_translated' = the same pairs "
                               f"with the moving image (and labels) translated by {50 * cfg.val_shift_fraction:g}-"
                               f"{100 * cfg.val_shift_fraction:g} % of the grid per axis (random signs), zeros outside",
                       "dice_definition": "mean foreground Dice of nearest-neighbour-warped moving labels",
                       "folding_definition": "% voxels with det J <= 0 inside the fixed labels' foreground"},
        "input_domain": input_domain(cfg.ndim, data, preprocessing=(
            "resampling to this grid (canonical RAS); no affine pre-alignment needed for translations within "
            f"about {cfg.shift_fraction:.0%} of the field of view; rotations are not handled")),
        "outputs": {"displacement": "voxels of the fixed network grid, x_moving = x + u(x)",
                    "inverse": "forward_pair: the swapped pass (approximate inverse, GradICON-regularised)",
                    "depth": "1 = coordinate attention only, 2 = + first refinement, 3 = full model"},
        "converged": conv["statement"],
        "convergence": conv,
    }


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, "carl", __doc__, CarlTrainConfig, train,
                        lambda r: (f"validation Dice {r['validation']['dice']:.3f}, "
                                                        f"translated {r['validation']['translated_dice']:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
