"""Train the topology CVAE ("Spot the Difference") on healthy augmented template pairs; CPU or CUDA.

    python -m toporeg.training.train_topology --config cfg.json --out DIR [--resume] [--time-budget S]

The model only ever sees pairs with the same topology (two augmented draws of MNI152/Colin27, 2D axial slices or
3D), as in the paper: changes of topology are what it has not learned to explain. Semantic features come from a
trained DeepSim-seg extractor (`deepsim_model`), copied into the CVAE and frozen. Validation: −ELBO per voxel on
held-out healthy pairs, and the pixel-wise AUC of L_sym on held-out synthetic lesion pairs (toporeg.topology.synthetic).
Outputs as the other trainers (train_log.csv, val_log.csv, loss_curve.png, checkpoint, NAME.safetensors + card).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.weights import load_model, save_model
from ..topology.cvae import TopologyCVAE
from . import common
from .dataset_cache import DEFAULT_CACHE, GRID_ORIGIN, GRID_SPACING, INTENSITY_PERCENTILES
from .loop import Checkpointer, common_arguments, overrides, run_loop, write_report
from .sharding import BatchDrawer
from .templates import TemplateAugmenter


@dataclass
class TopologyTrainConfig:
    name: str = "topology_2d"
    ndim: int = 2
    model: dict = field(default_factory=dict)          # TopologyCVAE kwargs (encoder, decoder, final_convs)
    features: str = "intensity"                        # intensity | semantic
    deepsim_model: str | None = None                   # DeepSim-seg weights for semantic features
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 50
    schedule_by_time: bool = True
    grad_clip: float = 10.0
    amp: bool = False
    time_budget_s: float | None = None
    augment: dict = field(default_factory=dict)
    cache: str = str(DEFAULT_CACHE)
    val_every: int = 200
    val_pairs: int = 8
    val_lesions: int = 8
    log_every: int = 20
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    plot: bool = True
    data_seeding: str = "stream"                       # stream | per_sample (sharding.py)


def build_model(cfg: TopologyTrainConfig, dev: torch.device) -> TopologyCVAE:
    extractor_cfg, extractor_state = None, None
    if cfg.features == "semantic":
        if not cfg.deepsim_model:
            raise ValueError("semantic features need deepsim_model (a trained DeepSim-seg extractor)")
        from ..models.catalogue import resolve_model
        extractor, _card = load_model(resolve_model(cfg.deepsim_model))
        extractor_cfg, extractor_state = extractor.config, extractor.state_dict()
        if extractor_cfg["ndim"] != cfg.ndim:
            raise ValueError(f"the DeepSim extractor is {extractor_cfg['ndim']}D, the model {cfg.ndim}D")
    model = TopologyCVAE(cfg.ndim, **cfg.model, features=cfg.features, extractor=extractor_cfg)
    if extractor_state is not None:
        model.extractor.load_state_dict(extractor_state)
    return model.to(dev)


@torch.no_grad()
def validate(model: TopologyCVAE, healthy: list[dict[str, torch.Tensor]], lesions: list) -> dict[str, float]:
    """Validation draws reparameterisation noise: it runs on a forked RNG so that it does not shift the training
    stream (the last validation of an interrupted run comes before its checkpoint; resume must match)."""
    dev = next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        return _validate(model, healthy, lesions)


def _validate(model: TopologyCVAE, healthy: list[dict[str, torch.Tensor]], lesions: list) -> dict[str, float]:
    model.eval()
    features = model.feature_map()
    elbo = [float(model.negative_elbo(p["fixed"], p["moving"], features)["total"]) for p in healthy]
    out = {"neg_elbo": sum(elbo) / len(elbo)}
    if lesions:
        from ..bench.roc import auc
        from ..topology.score import symmetric_score
        scores, labels = [], []
        for case in lesions:
            pair = symmetric_score(case["fixed"], case["moving"], lambda j, i, _init, _p: model.fit_pair(j, i, features))
            scores.append(pair.l_sym.flatten().cpu().numpy())
            labels.append(case["change"].flatten().cpu().numpy() > 0)
        import numpy as np
        out["lesion_auc"] = float(auc(np.concatenate(scores), np.concatenate(labels)))
    model.train()
    return out


def lesion_cases(cfg: TopologyTrainConfig, dev: torch.device) -> list[dict[str, torch.Tensor]]:
    """Held-out synthetic lesion pairs on the training grid (empty when the generator is unavailable)."""
    from ..topology.synthetic import validation_pairs
    return validation_pairs(cfg.cache, ndim=cfg.ndim, n=cfg.val_lesions, seed=cfg.seed + 20_001, device=dev)


def train(cfg: TopologyTrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    out, budget, ctx = common.start_run(cfg, out_dir)
    dev = ctx.device
    data = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 4, device=dev, config=cfg.augment)
    drawer = BatchDrawer(ctx, cfg.data_seeding, cfg.batch_size)
    healthy, lesions = [], []
    if ctx.is_main:
        held_out = TemplateAugmenter(cfg.cache, ndim=cfg.ndim, seed=cfg.seed + 10_004, device=dev,
                                     config=cfg.augment)
        healthy = [held_out.pairs(1) for _ in range(cfg.val_pairs)]
        lesions = lesion_cases(cfg, dev) if cfg.val_lesions else []
    model = build_model(cfg, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    log = ctx.csv_log(out / "train_log.csv", ["step", "elapsed_s", "lr", "total", "reconstruction", "kl", "alpha",
                                              "beta"])
    val_log = ctx.csv_log(out / "val_log.csv", ["step", "elapsed_s", "neg_elbo", "lesion_auc"])
    ckpt = Checkpointer(out / "checkpoint.safetensors", model, optimizer, cfg, ctx, {"rng.data": data.rng})
    step0, elapsed_before = ckpt.resume(resume, [log, val_log])
    features = model.feature_map()
    negative_elbo = ctx.wrap(model, "negative_elbo")  # α, β and Σ_f's start: pooled over the global batch

    def train_step(step: int) -> dict[str, torch.Tensor]:
        batch = drawer(data.rng, cfg.seed + 4, step, data.pairs)
        loss = negative_elbo(batch["fixed"], batch["moving"], features)
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        return {k: v.detach() for k, v in loss.items()}

    model.train()
    result = run_loop(cfg, budget, optimizer, train_step=train_step, validate=lambda: validate(model, healthy, lesions),
                      checkpoint=ckpt.save, log=log, val_log=val_log, n_val=cfg.val_pairs + 2 * len(lesions),
                      start_step=step0, elapsed_before=elapsed_before, ctx=ctx)
    if not ctx.is_main:
        return ctx.finish({})
    rows = log.rows()
    conv = common.convergence([float(r["step"]) for r in rows], [float(r["total"]) for r in rows])
    if lesions:
        conv = common.add_validation_trend(conv, val_log.rows(), "lesion_auc")
    conv["stopped_by"] = result.stopped_by
    card = _card(cfg, model, data, result, dev, conv)
    weights, card_path = save_model(model, out / f"{cfg.name}.safetensors", card)
    png = cfg.plot and common.plot_curves(out / "train_log.csv", out / "loss_curve.png", ["total", "reconstruction",
                                                                                          "kl"],
                                          out / "val_log.csv", ["lesion_auc"] if lesions else ["neg_elbo"])
    return ctx.finish(write_report(
        out, "train topology", cfg, steps=result.step, stopped_by=result.stopped_by, ctx=ctx,
        validation=result.final, conv=conv, weights=weights, card=card_path, png=png, budget=budget))


def _card(cfg: TopologyTrainConfig, model: TopologyCVAE, data: TemplateAugmenter, result, dev, conv) -> dict:
    shape = list(data.shape)
    return {
        "task": "topology",
        "method": "Spot the Difference CVAE (Czolbe, Feragen, Krause, NeurIPS 2021): displacement mean/log-variance "
                  "U-Net, learnable Laplacian prior (closed-form alpha, beta; running means at test time), "
                  f"{cfg.features} feature likelihood with learned diagonal variance",
        "training": {"data": common.TEMPLATE_DATA, "pairs": "healthy only (same topology), two augmented draws",
                     "iterations": result.step, "batch_size": cfg.batch_size, "seconds": round(result.elapsed_s, 1),
                     "device": common.device_description(dev), "seed": cfg.seed, "config": dataclasses.asdict(cfg)},
        "validation": {**result.final, "healthy_pairs": cfg.val_pairs, "lesion_pairs": cfg.val_lesions,
                       "note": "held-out augmentations of the same two templates; lesion pairs are synthetic"},
        "prior": model.running_prior().as_dict(),
        "feature_variance": [round(float(s), 6) for s in model.sigma2.detach()[:8]],
        "input_domain": {"modality": "T1w MRI (brain)", "skull": "stripped", "ndim": cfg.ndim,
                         "spacing_mm": [GRID_SPACING] * cfg.ndim, "shape": shape, "orientation": "RAS (canonical)",
                         "grid_origin_ras_mm": list(GRID_ORIGIN[: cfg.ndim]),
                         "slices": "axial (i, j plane of the RAS grid)" if cfg.ndim == 2 else None,
                         "intensity": f"percentile {INTENSITY_PERCENTILES[0]}/{INTENSITY_PERCENTILES[1]} -> [0, 1]",
                         "preprocessing": "affine pre-alignment by the optimisation engine"},
        "outputs": {"heatmap": "L_sym(J|I), nats per voxel on the fixed grid (Eq. 6 with the running alpha, beta)"},
        "converged": conv["statement"],
        "convergence": conv,
    }


def main(argv: list[str] | None = None) -> int:
    p = common_arguments("toporeg train topology", __doc__.splitlines()[0])
    p.add_argument("--deepsim-model", dest="deepsim_model", help="DeepSim-seg weights for semantic features")
    p.add_argument("--features", choices=["intensity", "semantic"])
    args = p.parse_args(argv)
    cfg = common.load_config(TopologyTrainConfig, args.config,
                             {**overrides(args), "deepsim_model": args.deepsim_model, "features": args.features})
    report = train(cfg, args.out, resume=args.resume)
    if not report:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    v = report["validation"]
    print(f"{report['name']}: {report['steps']} steps ({report['stopped_by']}), validation -ELBO "
          f"{v['neg_elbo']:.3f}" + (f", lesion AUC {v['lesion_auc']:.3f}" if "lesion_auc" in v else "")
          + f"; {report['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
