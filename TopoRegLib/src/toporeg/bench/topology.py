"""`toporeg bench topology`: pixel-wise ROC/AUC of topological-change maps (issue #5, "Benchmark").

    toporeg bench topology [--quick] [--out docs/benchmarks] [--deepsim-model PATH] [--model NAME_OR_PATH ...]
                           [--subjects N] [--subjects-3d N] [--seed S] [--threads N]

Sets (all built here from the template cache, `python -m toporeg.training.dataset_cache`):
  brain_2d / brain_3d  fixed J = one subject's template (Colin27 or MNI152) with an inserted change (lesion with
                       mass effect, resection cavity, ventricle opened/closed), smoothly deformed and re-contrasted;
                       moving I = the OTHER subject's template (inter-subject: normal anatomical variability gives
                       realistic false positives; both directions). Scored inside J's brain mask dilated by 2 voxels.
  cells_2d             generated SBEM-like slice pairs (organelles appearing/disappearing, merging walls).
  outlier_2d           test images with lesions (one subject) scored against a control set of the other subject's
                       healthy, deformed images: Q for TopoReg, control-mean-subtracted maps for the baselines.
  topology-aware rows  lesion cases with mass effect (intra-subject, so the true field is known): plain vs
                       topology-aware registration (similarity weights 1 − display map), displacement error.

Every TopoReg method of one pair starts from the SAME engine registration (one per ordered pair, shared), and the
baselines (Jacobian, Li & Wyatt, intensity difference) use the forward μ of TopoReg optimize-intensity's fit.

Modules: `topology_cases` (sizes, data sets), `topology_methods` (the methods, shared registrations),
`topology_scoring` (maps per set), `topology_summary` (AUC, bootstrap, target), `topology_aware` (topology-aware
registration rows), `topology_report` (Markdown, JSON, figures), `topology_run` (the whole run); the command line
is here, and every public name is importable from here.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ..training.dataset_cache import DEFAULT_CACHE
from .topology_aware import aware_case, aware_rows
from .topology_cases import (DIRECTIONS, FULL, MASK_DILATION, QUICK, SUBJECTS, BenchSize, OutlierGroup, Templates,
                             inter_subject_cases, load_templates, outlier_groups, scoring_mask)
from .topology_methods import BASELINES, REFERENCE, BenchFitter, MethodPlan, PairKey, SharedRegistrations, plan_methods
from .topology_report import JSON_NAME, MD_NAME, PNG_STEM, example_figure, markdown, roc_figure, write_outputs
from .topology_run import RunOptions, run_aware, run_benchmark, run_sets
from .topology_scoring import Log, SetScores, score_outlier, score_pairs
from .topology_summary import PAPER_AUC, TARGET_MARGIN, summarise, target_check

__all__ = [
    "BASELINES", "BenchFitter", "BenchSize", "DIRECTIONS", "FULL", "JSON_NAME", "Log", "MASK_DILATION", "MD_NAME",
    "MethodPlan", "OutlierGroup", "PAPER_AUC", "PNG_STEM", "PairKey", "QUICK", "REFERENCE", "RunOptions",
    "SUBJECTS", "SetScores", "SharedRegistrations", "TARGET_MARGIN", "Templates", "aware_case", "aware_rows",
    "example_figure", "inter_subject_cases", "load_templates", "main", "markdown", "outlier_groups", "parser",
    "plan_methods", "roc_figure", "run_aware", "run_benchmark", "run_sets", "score_outlier", "score_pairs",
    "scoring_mask", "summarise", "target_check", "write_outputs",
]


# --- command line -------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporeg bench topology", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/benchmarks", help="output folder (created if missing)")
    p.add_argument("--quick", action="store_true", help="tiny run (4 mm templates, 2 subjects, few iterations)")
    p.add_argument("--deepsim-model", help="DeepSim extractor (name or .safetensors) for optimize-semantic")
    p.add_argument("--model", nargs="+", action="extend", default=[], metavar="NAME_OR_PATH",
                   help="trained topology model(s); default: every catalogued topology model of the right dimension")
    p.add_argument("--subjects", type=int, help="2D cases per direction / cell pairs / outlier tests")
    p.add_argument("--subjects-3d", type=int, help="3D cases per direction (0: no 3D set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="template cache (.npz)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (QUICK if args.quick else FULL).with_subjects(args.subjects, args.subjects_3d)
    opts = RunOptions(size, Path(args.out), args.deepsim_model, tuple(args.model), args.seed, args.cache,
                      "toporeg bench topology " + shlex.join(argv))
    try:
        run_benchmark(opts)
    except KeyboardInterrupt:
        print("[bench] cancelled: no outputs written", file=sys.stderr)
        return 130
    print(Path(args.out) / MD_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
