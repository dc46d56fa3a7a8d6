"""`toporeg register FIXED MOVING --out DIR`: warped image, ITK displacement field, Jacobian, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..io import load_volume
from ..io.transforms_io import load_affine, save_affine_itk
from ..io.points import read_points
from ..methods import METHODS, PREALIGN, MethodOptions, register_with_method
from ..registration import TRANSFORM_MODELS, available_similarities, preset
from .common import add_preset_options, add_run_options, run_with_outputs


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
    p.add_argument("--transform", choices=TRANSFORM_MODELS, default=None,
                   help="transformation model (default: svf); --method dio: the solver's (svf, displacement, affine)")
    p.add_argument("--similarity", choices=available_similarities(), default=None,
                   help="similarity (default: lncc; nmi for different modalities)")
    p.add_argument("--moving-labels", type=Path, help="label map on the moving grid, warped with nearest neighbour")
    p.add_argument("--fixed-mask", type=Path, help="only voxels inside this mask drive the similarity")
    p.add_argument("--moving-mask", type=Path, help="moving-image voxels outside this mask are ignored")
    p.add_argument("--weights", type=Path, help="per-voxel similarity weights on the fixed grid (>= 0)")
    p.add_argument("--initial-transform", type=Path,
                   help="linear transform fixed→moving: ITK .tfm/.mat/.h5 (LPS) or a 4x4 RAS matrix .txt")
    p.add_argument("--regularization", type=float, default=None, help="smoothness weight (default per preset)")
    p.add_argument("--topology-aware", action="store_true",
                   help="first map topological changes (toporeg topology, training-free) and down-weight them in "
                        "the similarity, so lesions and cavities do not drag the surrounding tissue")
    learned = p.add_argument_group("learned, dio and carl methods")
    learned.add_argument("--model", help="bundled model name (see `toporeg models`) or a .safetensors path (with its "
                                         ".json card); default: the bundled model of the method for 2D/3D")
    learned.add_argument("--prealign", choices=PREALIGN, default=None,
                         help="before the network: the engine's affine (default) or none (default for carl, which "
                              "is built for large misalignment); --initial-transform is used either way")
    learned.add_argument("--refine", type=int, default=0, metavar="N",
                         help="learned: refine the network's field with N optimisation iterations; carl: N steps "
                              "of instance optimisation on a copy of the network")
    learned.add_argument("--iterations", type=int, nargs="+", metavar="N",
                         help="dio: solver iterations per scale, coarse to fine (default: the model card's); with "
                              "--transform svf (default for dio), displacement or affine")
    learned.add_argument("--depth", type=int, choices=(1, 2, 3), default=3,
                         help="carl: steps to run (1: coordinate attention only, 2: + half-resolution U-Net)")
    learned.add_argument("--fixed-labels", type=Path,
                         help="dio prompt: label map on the fixed grid; with --moving-labels, the solver also "
                              "matches these labels")
    learned.add_argument("--label-weight", type=float, default=1.0, help="dio: weight of the label prompt")
    learned.add_argument("--fixed-landmarks", type=Path,
                         help="dio prompt: points (.mrk.json, .fcsv, .csv) in the fixed image, paired in order "
                              "with --moving-landmarks")
    learned.add_argument("--moving-landmarks", type=Path, help="dio prompt: the matching points in the moving image")
    learned.add_argument("--landmark-weight", type=float, default=0.01,
                         help="dio: weight of the landmark prompt (per squared voxel of the model grid)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_with_outputs(args, "register", _register)


def _options(args: argparse.Namespace) -> MethodOptions:
    """The learned methods' options from the flags (each refused by a method that has no use for it)."""
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise InputError("give both --fixed-landmarks and --moving-landmarks, or neither")
    if args.fixed_labels is not None and args.moving_labels is None:
        raise InputError("--fixed-labels (a dio label prompt) needs --moving-labels")
    dio = args.method == "dio"
    if dio and args.transform == "rigid":
        raise InputError("the DIO solver has no rigid transform: use svf, displacement or affine")
    return MethodOptions(
        model=args.model, refine=args.refine, prealign=args.prealign,
        dio_transform=args.transform if dio else None,
        iterations=tuple(args.iterations) if args.iterations else None, depth=args.depth,
        prompt_labels=None if args.fixed_labels is None else (load_volume(args.fixed_labels, is_label=True),
                                                              load_volume(args.moving_labels, is_label=True)),
        prompt_points=None if args.fixed_landmarks is None else (read_points(args.fixed_landmarks),
                                                                 read_points(args.moving_landmarks)),
        label_weight=args.label_weight, landmark_weight=args.landmark_weight)


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
    options = _options(args)
    extra: dict = {}  # report fields added by --topology-aware
    if args.topology_aware:
        if args.method != "optimize":
            raise InputError(f"--topology-aware applies to --method optimize, not {args.method}")
        weights, extra = _topology_weights(fixed, moving, weights, fixed_mask, moving_mask, args, out, progress)
    result = register_with_method(args.method, fixed, moving, settings, options, fixed_mask=fixed_mask,
                                  moving_mask=moving_mask, weights=weights, initial_transform=initial,
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
