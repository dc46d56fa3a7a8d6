"""The Neuralizer model card: architecture, the tasks and data it saw (with licences), what it held out, how well it
did, the inputs it expects and what it cannot do. Kept apart from the trainer so the wording has one home."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import common
from .dataset_cache import GRID_SPACING, INTENSITY_PERCENTILES

ARCHITECTURE = ("Neuralizer (Czolbe & Dalca 2023): 1x1-conv embeddings of the target and of each concatenated "
                "context pair, Pairwise-Conv-Avg blocks (a GELU residual unit per stream, context units shared; "
                "pairwise concatenation of target and each member; 1x1 convs k_x (target update = mean over the "
                "context set) and k_C (member update)) in a U-Net arrangement (levels encoder blocks with 2x average "
                "pooling, levels - 1 decoder blocks after 2x bilinear upsampling + skip concatenation), a final "
                "residual unit and a 1x1 conv to one channel; invariant to context order and size")


def limitations(cfg: Any, data: Any) -> list[str]:
    d = data.describe()
    return [
        "trained on ONE real brain (the ICBM152 2009a template, under random affine + elastic deformations and "
        "synthetic appearances) with atlas label maps in MNI space: real inter-subject anatomical variability, "
        "pathology (lesions, tumours), children and atrophy were never seen",
        f"context sets of 1..{cfg.max_context} pairs in training (paper: 1..32); larger sets are accepted and "
        "averaged, but were not trained on",
        "2D slice-wise (axial, coronal, sagittal slices of 2 mm affinely aligned brains); no through-plane "
        "context: 3D predictions can be inconsistent between slices",
        "context images must be affinely aligned to the target (the inference aligns them with the optimisation "
        "engine); targets far from the MNI field of view at 2 mm (other organs, very different fields of view) "
        "are outside the domain",
        f"held out of training entirely: label protocols {d.get('held_out_protocols')}, tasks "
        f"{d.get('held_out_tasks')}, subject(s) {d.get('held_out_subjects')} (the benchmark measures them)",
        "a small model trained briefly on a 2-core CPU (paper: 64 channels, 7 days on an A100); see 'converged' "
        "for how far from convergence it stopped",
    ]


def model_card(cfg: Any, model: Any, data: Any, result: Any, dev: Any, conv: dict[str, Any]) -> dict[str, Any]:
    lo, hi = INTENSITY_PERCENTILES
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "task": "few-shot multi-task (segment | image), defined by the context set",
        "description": ARCHITECTURE,
        "architecture_config": {**model.config, "parameters": n_params},
        "neuralizer": {"spacing_mm": GRID_SPACING, "in_channels": model.in_channels, "max_context": cfg.max_context,
                       "planes": list(data.describe().get("planes", [])), "divisor": model.divisor,
                       "intensity": f"percentile {lo}/{hi} -> [0, 1], clipped, per volume",
                       "output": "one channel in context-output units; masks: y >= 0.5 "
                                 "(probability sigmoid(6 (y - 0.5)))"},
        "training": {"data": data.describe(), "iterations": result.step, "batch_size": cfg.batch_size,
                     "seconds": round(result.elapsed_s, 1), "device": common.device_description(dev),
                     "seed": cfg.seed, "stopped_by": conv.get("stopped_by"),
                     "loss": f"soft Dice (mask tasks) or MSE / (2 sigma^2), sigma^2 = {cfg.sigma2} (image tasks)",
                     "context_size": f"U{{1..{cfg.max_context}}} per step", "config": dataclasses.asdict(cfg)},
        "validation": {**result.final, "episodes": cfg.val_episodes, "context_size": cfg.val_context,
                       "note": "fixed episodes of the training distribution (other seed; training subject, seen "
                               "tasks and protocols): Dice of y >= 0.5 on mask tasks, PSNR (peak 1) on image tasks; "
                               "unseen subjects and held-out tasks: see docs/benchmarks/neuralizer.md"},
        "input_domain": {"modality": "any (trained on T1w and synthetic contrasts)", "ndim": 2,
                         "spacing_mm": [GRID_SPACING] * 2, "orientation": "RAS (canonical) slices",
                         "field_of_view": "brain or whole head, affinely aligned to the context"},
        "limitations": limitations(cfg, data),
        "converged": conv["statement"],
        "convergence": conv,
    }
