"""`toporeg register FIXED MOVING --out DIR`: warped image, ITK displacement field, Jacobian, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..io import load_volume
from ..io.transforms_io import load_affine, save_affine_itk
from ..registration import TRANSFORM_MODELS, available_similarities, preset, register as run_registration
from .common import add_preset_options, add_run_options, run_with_outputs

METHODS = ("optimize", "learned", "dio", "carl")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register MOVING onto FIXED (outputs on the fixed grid)",
                       description="Writes warped.nii.gz, displacement.nii.gz (ITK/LPS, fixed→moving, affine "
                                   "included), inverse_displacement.nii.gz (SVF/affine), jacobian.nii.gz, "
                                   "warped_labels.nii.gz (with --moving-labels) and report.json.")
    p.add_argument("fixed", help="fixed (target) image")
    p.add_argument("moving", help="moving image, brought onto the fixed grid")
    add_run_options(p)
    p.add_argument("--method", choices=METHODS, default="optimize", help="algorithm (default: optimize)")
    add_preset_options(p)
    p.add_argument("--transform", choices=TRANSFORM_MODELS, default=None, help="transformation model (default: svf)")
    p.add_argument("--similarity", choices=available_similarities(), default=None,
                   help="similarity (default: lncc; nmi for different modalities)")
    p.add_argument("--moving-labels", type=Path, help="label map on the moving grid, warped with nearest neighbour")
    p.add_argument("--fixed-mask", type=Path, help="only voxels inside this mask drive the similarity")
    p.add_argument("--moving-mask", type=Path, help="moving-image voxels outside this mask are ignored")
    p.add_argument("--weights", type=Path, help="per-voxel similarity weights on the fixed grid (>= 0)")
    p.add_argument("--initial-transform", type=Path,
                   help="linear transform fixed→moving: ITK .tfm/.mat/.h5 (LPS) or a 4x4 RAS matrix .txt")
    p.add_argument("--regularization", type=float, default=None, help="smoothness weight (default per preset)")
    p.add_argument("--model", help="--method learned: bundled model name (see `toporeg models`) or a .safetensors "
                                   "path (with its .json card)")
    p.add_argument("--topology-aware", action="store_true",
                   help="first map topological changes (toporeg topology, training-free) and down-weight them in "
                        "the similarity, so lesions and cavities do not drag the surrounding tissue")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="--method learned: refine the network's field with N optimisation iterations")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.method in ("dio", "carl"):
        raise InputError(f"--method {args.method} is not available in this version; use --method optimize")
    if args.method == "learned" and args.model is None:
        args.model = "vxm_diff_2d" if load_volume(args.fixed).spatial_ndim == 2 else "vxm_diff_3d_2mm"
    return run_with_outputs(args, "register", _register)


def _register(args: argparse.Namespace, out: Path, progress, timings) -> dict:
    with timings.stage("load"):
        fixed = load_volume(args.fixed, is_label=False)
        moving = load_volume(args.moving, is_label=False)
        labels = load_volume(args.moving_labels, is_label=True) if args.moving_labels else None
        fixed_mask = load_volume(args.fixed_mask, is_label=True) if args.fixed_mask else None
        moving_mask = load_volume(args.moving_mask, is_label=True) if args.moving_mask else None
        weights = load_volume(args.weights, is_label=False) if args.weights else None
        initial = load_affine(args.initial_transform) if args.initial_transform else None
    settings = preset(args.preset, transform=args.transform, similarity=args.similarity,
                      regularization=args.regularization)
    extra: dict = {}  # report fields added by --topology-aware
    if args.method == "learned":
        from ..models.inference import learned_register

        from ..models.catalogue import resolve_model

        result = learned_register(fixed, moving, resolve_model(args.model), refine_iterations=args.refine, affine_settings=settings,
                                  fixed_mask=fixed_mask, moving_mask=moving_mask,
                                  progress=progress.sub("register", 0, 0.95), device=args.device)
    else:
        if args.topology_aware:
            weights, extra = _topology_weights(fixed, moving, weights, fixed_mask, moving_mask, args, out, progress)
        result = run_registration(fixed, moving, settings, fixed_mask=fixed_mask, moving_mask=moving_mask,
                                  weights=weights, initial_transform=initial,
                                  progress=progress.sub("register", 0, 0.95), device=args.device)
    with timings.stage("save"):
        files = result.save(out, moving_labels=labels)
        save_affine_itk(result.affine_ras, out / "affine.tfm")
        files["affine"] = "affine.tfm"
    timings.update({f"registration.{k}": v for k, v in result.timings.items()})
    files.update(extra.pop("files", {}))
    return {"method": args.method, "preset": args.preset, "files": files, "metrics": result.summary(),
            "registration_settings": result.settings, "messages": result.messages, **extra}


def _topology_weights(fixed, moving, weights, fixed_mask, moving_mask, args, out: Path, progress):
    """Similarity weights 1 − heatmap_display (training-free topology heatmap), times the user's weights."""
    import numpy as np

    from ..geometry import resample_to
    from ..io import Volume, save_volume
    from ..topology.pipeline import TopologySettings, topology_heatmap

    topo = topology_heatmap(fixed, moving, TopologySettings(preset=args.preset), fixed_mask=fixed_mask,
                            moving_mask=moving_mask, progress=progress.sub("topology", 0.0, 0.4), device=args.device)
    w = 1.0 - np.asarray(topo.display.data, np.float32)
    if weights is not None:
        w = w * np.asarray(resample_to(weights, fixed).data, np.float32).reshape(w.shape)
    vol = Volume(w.astype(np.float32), fixed.affine)
    save_volume(topo.heatmap, out / "heatmap.nii.gz")
    save_volume(vol, out / "topology_weights.nii.gz")
    return vol, {"files": {"heatmap": "heatmap.nii.gz", "topology_weights": "topology_weights.nii.gz"},
                 "topology": {"display_legend": topo.legend, "seconds": topo.timings.get("total_seconds")}}
