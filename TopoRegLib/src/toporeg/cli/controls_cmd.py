"""`toporeg controls CONTROL... --out DIR`: control-set statistics for the outlier score Q, computed once (O(|C|²)
pair fits) and reused for every image of a cohort with `toporeg topology FIXED MOVING --control-stats DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import load_volume, save_volume
from ..topology.control_stats import METADATA_FILE, TENSORS_FILE, compute_control_statistics
from .common import add_run_options, run_with_outputs
from .topology_cmd import add_settings_options, control_paths, settings_from_args

MEAN_HEATMAP_FILE = "mean_control_heatmap.nii.gz"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "controls", help="control-set statistics for the outlier score Q (use with topology --control-stats DIR)",
        description=f"Registers every control affinely to the reference, fits the leave-one-out control baselines "
                    f"once and writes {TENSORS_FILE} + {METADATA_FILE} (the statistics, with the tensor file's "
                    f"sha256), {MEAN_HEATMAP_FILE} (mean L_sym among the controls, nats per voxel, reference grid) "
                    "and report.json. Use the same --method/--features/--model/--deepsim-model as the topology runs.")
    p.add_argument("controls", nargs="+", type=Path, metavar="CONTROL",
                   help="control images (files, or one folder of images); at least two")
    add_run_options(p)
    p.add_argument("--reference", type=Path,
                   help="reference (atlas) image: Q's common space and the mean heatmap's grid (default: first control)")
    add_settings_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_with_outputs(args, "controls", _controls)


def _controls(args: argparse.Namespace, out: Path, progress, timings) -> dict:
    paths = control_paths(args.controls)
    reference_path = args.reference or paths[0]
    settings = settings_from_args(args, reference_path)
    with timings.stage("load"):
        controls = [load_volume(p, is_label=False) for p in paths]
        reference = load_volume(args.reference, is_label=False) if args.reference else None
    with timings.stage("statistics"):
        stats = compute_control_statistics(controls, settings, reference=reference,
                                           progress=progress.sub("controls", 0.0, 0.95), device=args.device)
    with timings.stage("save"):
        files = stats.save(out)
        save_volume(stats.mean_heatmap(), out / MEAN_HEATMAP_FILE)
    n = len(controls)
    return {"method": settings.method, "features": settings.features, "reference": str(reference_path),
            "controls": [str(p) for p in paths], "pair_fits": 2 * n * (n - 1),
            "files": {**files, "mean_control_heatmap": MEAN_HEATMAP_FILE},
            "units": "mean control heatmap and baselines: nats per voxel (leave-one-out mean L_sym among the controls)",
            "metrics": stats.summary()}
