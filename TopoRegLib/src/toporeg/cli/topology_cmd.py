"""`toporeg topology FIXED MOVING --out DIR`: where no smooth invertible deformation explains the pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import load_volume, save_volume
from ..io.formats import list_image_files
from ..topology.control_stats import ControlStatistics
from ..topology.pipeline import TopologySettings, topology_heatmap
from .common import add_preset_options, add_run_options, run_with_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "topology", help="topological-change heatmap L_sym(FIXED|MOVING) (and outlier score Q with controls)",
        description="Writes heatmap.nii.gz (L_sym(FIXED|MOVING), nats per voxel, fixed grid), heatmap_display.nii.gz "
                    "(0-1: log(1 + max(L - median, 0)) / log(1001), legend in report.json), outlier.nii.gz (with "
                    "--controls or --control-stats), registration/ (the initial registration's outputs) and "
                    "report.json.")
    p.add_argument("fixed", help="image to examine (J); the heatmap lives on its grid")
    p.add_argument("moving", help="reference image (I)")
    add_run_options(p)
    add_settings_options(p)
    p.add_argument("--controls", nargs="+", type=Path,
                   help="control images (files, or one folder of images): adds the outlier score Q(FIXED)")
    p.add_argument("--control-stats", type=Path, metavar="DIR",
                   help="control statistics from `toporeg controls` (instead of --controls): adds Q(FIXED) "
                        "without refitting the control baselines")
    p.add_argument("--fixed-mask", type=Path, help="foreground of FIXED (registration and display scaling)")
    p.add_argument("--moving-mask", type=Path, help="foreground of MOVING")
    p.set_defaults(func=run)


def add_settings_options(p: argparse.ArgumentParser) -> None:
    """The topology settings (method, features, models, fit budget): shared with `toporeg controls`, whose
    statistics must be computed with the same settings as the runs that use them."""
    p.add_argument("--method", choices=["optimize", "learned"], default="optimize",
                   help="optimize: training-free ELBO fit per pair (default); learned: a trained topology CVAE")
    p.add_argument("--features", choices=["semantic", "intensity"], default="intensity",
                   help="likelihood features (semantic needs a DeepSim extractor or a semantic model)")
    p.add_argument("--model", help="--method learned: topology model name or .safetensors path")
    p.add_argument("--deepsim-model", help="--method optimize --features semantic: DeepSim extractor name or path")
    add_preset_options(p, help="preset of the initial registration")
    p.add_argument("--iterations", type=int, default=60, help="ELBO fit iterations per direction (optimize)")


def settings_from_args(args: argparse.Namespace, image: Path) -> TopologySettings:
    """TopologySettings from `add_settings_options`' flags; the default DeepSim extractor matches `image`'s
    dimension (2D or 3D)."""
    from ..models.catalogue import resolve_model

    deepsim = str(resolve_model(args.deepsim_model)) if args.deepsim_model else None
    if args.method == "optimize" and args.features == "semantic" and deepsim is None:
        deepsim = str(resolve_model(f"deepsim_seg_{'2d' if load_volume(image).spatial_ndim == 2 else '3d'}"))
    return TopologySettings(method=args.method, features=args.features,
                            model=str(resolve_model(args.model)) if args.model else None, deepsim_model=deepsim,
                            preset=args.preset, iterations=args.iterations)


def control_paths(items: list[Path] | None) -> list[Path]:
    """Control images given as files, or as one folder of images."""
    if not items:
        return []
    if len(items) == 1 and items[0].is_dir():
        return list_image_files(items[0])
    return list(items)


def run(args: argparse.Namespace) -> int:
    return run_with_outputs(args, "topology", _topology)


def _topology(args: argparse.Namespace, out: Path, progress, timings) -> dict:
    settings = settings_from_args(args, args.fixed)
    with timings.stage("load"):
        fixed = load_volume(args.fixed, is_label=False)
        moving = load_volume(args.moving, is_label=False)
        controls = [load_volume(p, is_label=False) for p in control_paths(args.controls)]
        stats = ControlStatistics.load(args.control_stats) if args.control_stats else None
        fixed_mask = load_volume(args.fixed_mask, is_label=True) if args.fixed_mask else None
        moving_mask = load_volume(args.moving_mask, is_label=True) if args.moving_mask else None
    result = topology_heatmap(fixed, moving, settings, controls=controls, control_stats=stats,
                              fixed_mask=fixed_mask, moving_mask=moving_mask,
                              progress=progress.sub("topology", 0, 0.95), device=args.device)
    with timings.stage("save"):
        files = {"heatmap": "heatmap.nii.gz", "heatmap_display": "heatmap_display.nii.gz"}
        save_volume(result.heatmap, out / files["heatmap"])
        save_volume(result.display, out / files["heatmap_display"])
        if result.outlier is not None:
            files["outlier"] = "outlier.nii.gz"
            save_volume(result.outlier, out / files["outlier"])
        reg_files = result.registration.save(out / "registration")
        files.update({f"registration/{k}": f"registration/{v}" for k, v in reg_files.items()})
    timings.update({f"topology.{k}": v for k, v in result.timings.items()})
    return {"method": args.method, "features": args.features, "files": files,
            "units": "heatmap: nats per voxel (L_sym, Czolbe et al. 2021 Eq. 6, symmetrised)",
            "controls": [str(p) for p in control_paths(args.controls)],
            "control_stats": None if stats is None else {"path": str(args.control_stats), **stats.summary()},
            "metrics": result.summary(),
            "messages": result.messages}
