"""`toporeg bench topology`: the run: every set scored and summarised, the topology-aware rows, the outputs written
once everything was computed."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..topology.synthetic import brain_cases, cell_cases
from ..training.dataset_cache import DEFAULT_CACHE
from ..training.synth import RandomFields
from .registration import git_commit, machine
from .topology_aware import aware_rows
from .topology_cases import SUBJECTS, BenchSize, Templates, inter_subject_cases, load_templates, outlier_groups
from .topology_methods import BASELINES, MethodPlan, plan_methods
from .topology_report import write_outputs
from .topology_scoring import Log, SetScores, score_outlier, score_pairs
from .topology_summary import PAPER_AUC, TARGET_MARGIN, _baseline_note, summarise


@dataclass
class RunOptions:
    size: BenchSize
    out: Path
    deepsim: str | None = None
    models: tuple[str, ...] = ()
    seed: int = 0
    cache: Path = DEFAULT_CACHE
    command: str = ""


def _brain_description(ndim: int, templates: Templates) -> str:
    kind = "axial slices near the largest brain slice (± 4)" if ndim == 2 else "volumes"
    return (f"Colin27 / MNI152 {kind} at {templates.spacing_mm:g} mm. J = one subject + an inserted lesion (own "
            "intensity, mass effect), resection cavity or opened/closed ventricle (in turn), random smooth "
            "deformation (≤ 3 voxels) and intensity change (gamma, bias field, noise); I = the other subject "
            "(inter-subject; both directions). Scored in J's brain mask dilated by 2 voxels.")


def _brain_set(opts: RunOptions, templates: Templates, ndim: int, plan: MethodPlan, log: Log) -> SetScores:
    n = opts.size.brain_2d if ndim == 2 else opts.size.brain_3d
    cases = inter_subject_cases(templates, n, ndim, RandomFields(opts.seed * 1000 + (1 if ndim == 2 else 4)))
    return score_pairs(f"brain_{ndim}d", _brain_description(ndim, templates), cases, plan, log)


def _cell_set(opts: RunOptions, plan: MethodPlan, log: Log) -> SetScores:
    size = opts.size
    shape = "×".join(map(str, size.cell_shape))
    out = score_pairs("cells_2d", f"Generated SBEM-like {shape} slice pairs: organelles appearing/disappearing, a "
                      "merged cell wall, smooth deformation ≤ 2 px, noise; scored over the whole image.",
                      cell_cases(size.cells, size.cell_shape, RandomFields(opts.seed * 1000 + 2)), plan, log)
    if len(plan.fitters) > 1:
        out.notes.append("the DeepSim extractor and the learned topology models were trained on brain MRI slices: "
                         "cell images are outside their training domain (no cell-trained model exists here)")
    return out


def _outlier_set(opts: RunOptions, templates: Templates, plan: MethodPlan, log: Log) -> SetScores:
    size = opts.size
    groups = outlier_groups(templates, size.controls, size.tests, RandomFields(opts.seed * 1000 + 3))
    return score_outlier("outlier_2d", f"{size.tests} lesion test slices (one subject, deformed, re-contrasted) "
                         f"against {size.controls} healthy control slices of the OTHER subject (deformed, "
                         "re-contrasted), both directions. TopoReg: Q(J); baselines: test map minus the control-set "
                         "mean map (outlier_adjusted). Scored in J's dilated brain mask.", groups, plan, log)


def run_sets(opts: RunOptions, templates: Templates, log: Log) -> tuple[list[SetScores], list[dict], dict]:
    """Every set; returns (scores, summaries, the methods' notes). Both plans are built first, so every model is
    resolved and loaded before the long part starts (a weights file replaced mid-run cannot break it)."""
    plan2 = plan_methods(2, templates.affine, opts.size, opts.deepsim, opts.models)
    plan3 = plan_methods(3, templates.affine, opts.size, opts.deepsim, opts.models) if opts.size.brain_3d else None
    sets = [_brain_set(opts, templates, 2, plan2, log), _cell_set(opts, plan2, log),
            _outlier_set(opts, templates, plan2, log)]
    methods = {f.name: f.note for f in plan2.fitters}
    if plan3 is not None:
        sets.append(_brain_set(opts, templates, 3, plan3, log))
        methods.update({f"{f.name} (3D)": f.note for f in plan3.fitters if f.name not in methods})
    return sets, [summarise(s, opts.size.n_boot, opts.seed) for s in sets], methods


def run_aware(opts: RunOptions, templates: Templates, log: Log) -> list[dict[str, Any]]:
    size, rows = opts.size, []
    for ndim, n in ((2, size.aware_2d), (3, size.aware_3d)):
        if n <= 0:
            continue
        rng = RandomFields(opts.seed * 1000 + 10 + ndim)
        cases = [brain_cases(*templates.arrays[SUBJECTS[i % 2]], 1, ndim, rng, ("lesion",))[0] for i in range(n)]
        rows.append(aware_rows(f"lesion_{ndim}d", cases, templates.affine, size, log))
    return rows


def run_benchmark(opts: RunOptions, log: Log | None = None) -> dict[str, Any]:
    """The whole benchmark; writes the outputs into opts.out and returns the JSON document."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    templates = load_templates(opts.cache, opts.size.downsample)
    sets, summaries, methods = run_sets(opts, templates, log)
    aware = run_aware(opts, templates, log)
    methods.update({b: _baseline_note(b, "") for b in BASELINES})
    doc = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_commit(),
           "machine": machine(), "command": opts.command, "total_seconds": time.perf_counter() - start,
           "size": vars(opts.size), "seed": opts.seed, "methods": methods, "sets": summaries,
           "topology_aware": aware, "paper_reference_auc": PAPER_AUC, "target_margin": TARGET_MARGIN}
    for path in write_outputs(doc, sets, opts.out):
        log(f"[bench] wrote {path}")
    return doc
