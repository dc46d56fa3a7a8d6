"""`toporeg segment IMAGE --out DIR`: labels, per-class probabilities, entropy (the uncertainty overlay), samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .common import add_run_options, run_with_outputs

METHODS = ("unet", "ensemble", "mcdropout", "probunet")
TASKS = ("brain", "tissue")
DEFAULT_TASK = "tissue"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help="segment a brain MRI (brain mask or tissue classes) with a voxel-wise uncertainty map",
        description="Writes labels.nii.gz (or labels.seg.nrrd), probabilities.nii.gz (one channel per label), "
                    "entropy.nii.gz (bits, log2; the uncertainty overlay), samples/ (with --save-samples) and "
                    "report.json (per-label volumes, mean uncertainty); all on the input's own grid.")
    p.add_argument("image", type=Path, help="T1-weighted image (NIfTI, NRRD, MHA, DICOM folder)")
    add_run_options(p)
    p.add_argument("--model", default="unet",
                   help="uncertainty method of a bundled model (unet, ensemble, mcdropout, probunet: picks "
                        "seg_{task}_{method}), or a model name / .safetensors path (with its .json card)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help=f"label set: brain (mask) or tissue (CSF/GM/WM); default {DEFAULT_TASK}, or the card's task "
                        "for a model given by path")
    p.add_argument("--samples", type=int, default=16, help="Monte-Carlo samples averaged (default 16)")
    p.add_argument("--save-samples", type=int, default=0, metavar="N", help="also write N sampled label maps")
    p.add_argument("--format", choices=["nii", "seg.nrrd"], default="nii", help="label file format")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (reproducible samples)")
    p.set_defaults(func=run)


def model_path(model: str, task: str | None) -> Path:
    """Weights of `--model`: a method name picks the bundled/user model seg_{task}_{method}; else a name or path."""
    from ..models.catalogue import resolve_model

    if model not in METHODS:
        return resolve_model(model)
    task = task or DEFAULT_TASK
    name = f"seg_{task}_{model}"
    try:
        return resolve_model(name)
    except InputError:
        raise InputError(f"no trained '{name}' model is installed (bundled Resources/Models or $TOPOREG_MODELS): "
                         f"train it with `toporeg train segmentation --model {model} --task {task}` and copy the "
                         f".safetensors + .json there, or give a weights file with --model PATH") from None


def run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    if not 0 <= args.save_samples <= args.samples:
        raise InputError(f"--save-samples must be between 0 and --samples ({args.samples}), got {args.save_samples}")
    if not Path(args.image).exists():
        raise InputError("file not found", args.image)
    _refuse_overwriting_input(args)
    args.model_path = model_path(args.model, args.task)
    return run_with_outputs(args, "segment", _segment)


def _segment(args: argparse.Namespace, out: Path, progress, timings) -> dict:
    from ..io import load_volume
    from ..models.weights import load_model
    from ..registration.device import resolve_device
    from ..segmentation.inference import segment

    with timings.stage("load"):
        image = load_volume(args.image, is_label=False)
        device = resolve_device(args.device)
        model, card = load_model(args.model_path, device=device)
    if args.task is not None and card.get("task") not in (None, args.task):
        raise InputError(f"--task {args.task} but this model was trained for the '{card.get('task')}' task",
                         args.model_path)
    result = segment(image, model, samples=args.samples, device=device, card=card, keep_samples=args.save_samples,
                     seed=args.seed, progress=progress.sub("segment", 0.0, 0.95))
    with timings.stage("save"):
        files = result.save(out, fmt=args.format)
    timings.update({f"segment.{k}": v for k, v in result.timings.items()})
    return {"task": card.get("task"), "method": result.settings["method"], "files": files,
            "model": {"name": card.get("name"), "path": str(args.model_path), "sha256": card.get("sha256"),
                      "labels": {str(k): v for k, v in result.label_names.items()}, "converged": card.get("converged")},
            "segmentation_settings": result.settings, "metrics": result.summary(), "messages": result.messages}


def _refuse_overwriting_input(args: argparse.Namespace) -> None:
    """Inputs are never overwritten: refuse an --out folder where an output would replace the image."""
    source, out = Path(args.image).resolve(), Path(args.out).resolve()
    ext = ".nii.gz" if args.format == "nii" else ".seg.nrrd"
    names = [f"labels{ext}", "probabilities.nii.gz", "entropy.nii.gz", "report.json",
             *[f"samples/sample_{i:02d}{ext}" for i in range(args.save_samples)]]
    for name in names:
        if out / name == source:
            raise InputError(f"the output {name} would overwrite the input image; choose another --out folder",
                             args.image)
