"""`toporeg demo`: the main job on the bundled sample data, end to end, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..data import sample_path
from ..geometry import resample_to
from ..io import load_volume, save_volume
from .common import add_run_options, run_with_outputs

FIXED = "mni152_t1_2mm.nii.gz"
MOVING = "colin27_t1_2mm.nii.gz"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run TopoReg on the bundled sample data (MNI152 and Colin27 brains)")
    add_run_options(p)
    p.set_defaults(func=run, out=Path("out/demo"))
    for action in p._actions:
        if action.dest == "out":
            action.required = False
            action.help = "output folder (default: out/demo)"


def run(args: argparse.Namespace) -> int:
    return run_with_outputs(args, "demo", _demo)


def _demo(args: argparse.Namespace, out: Path, progress, timings) -> dict:
    with timings.stage("load"):
        fixed = load_volume(sample_path(FIXED))
        moving = load_volume(sample_path(MOVING))
    progress.update("demo", 0.2, f"loaded {FIXED} ({fixed.describe()}) and {MOVING} ({moving.describe()})")
    with timings.stage("resample"):
        on_fixed = resample_to(moving, fixed)
        save_volume(on_fixed, out / "moving_on_fixed_grid.nii.gz")
    progress.update("demo", 0.6, "resampled the moving image onto the fixed grid")
    a, b = fixed.data.astype(np.float64), on_fixed.data.astype(np.float64)
    overlap = (a > np.percentile(a, 60)) & (b > np.percentile(b, 60))
    return {
        "fixed": {"file": FIXED, "geometry": fixed.describe()},
        "moving": {"file": MOVING, "geometry": moving.describe()},
        "metrics": {"correlation_before_registration": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
                    "foreground_overlap_voxels": int(overlap.sum())},
    }
