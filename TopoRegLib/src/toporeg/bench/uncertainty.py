"""`toporeg bench uncertainty`: the four uncertainty methods on a head none of them saw (issue #6 benchmark).

    toporeg bench uncertainty --out docs/benchmarks [--fast] [--models DIR] [--tasks tissue,ambiguous,brain]
                              [--volumes N] [--samples 16] [--seed 2021] [--hold-out colin27]

Test data: the held-out template (default Colin27, which the bundled models never saw), drawn with a fixed seed
as 3D volumes, half as the real whole-head scan (skull, face, neck) and half skull-stripped, each under a random
affine + elastic warp, blur, resolution change, gamma, bias field and noise. Every model goes through the public
inference path (`toporeg.segmentation.segment`: percentile normalisation, slice-wise for 2D models, 16 samples)
on the same volumes. Metrics (`toporeg.segmentation.scoring`): Dice per class; AUROC of the per-voxel entropy as a
detector of misclassified voxels, mean entropy on correct vs wrong voxels and ECE, in the foreground dilated by
4 voxels; on the ambiguous task GED (d = 1 − IoU, 16 model samples vs 16 simulated annotators) and sample
diversity per axial slice through the structure. Plus the CPU time of the plain U-Net on one real 2 mm head.
Writes uncertainty.md, uncertainty.json and uncertainty.png into --out.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..segmentation.data import TASKS, SegmentationData
from ..segmentation.data_cache import SEG_CACHE
from ..segmentation.scoring import ScoreAccumulator, majority
from ..training.dataset_cache import DEFAULT_CACHE, load_cache
from .uncertainty_report import write_outputs

METHODS = ("unet", "ensemble", "mcdropout", "probunet")
AUROC_TARGET, CPU_TARGET_S = 0.85, 10.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    out: Path
    tasks: tuple[str, ...] = ("tissue", "ambiguous", "brain")
    models_dir: Path | None = None
    volumes: int = 2                 # per appearance (whole head, skull-stripped)
    samples: int = 16
    annotators: int = 16
    timing_runs: int = 3
    seed: int = 2021
    hold_out: str = "colin27"
    cache: Path = DEFAULT_CACHE
    seg_cache: Path = SEG_CACHE
    command: str = "toporeg bench uncertainty"


FAST = {"volumes": 1, "samples": 4, "annotators": 8, "timing_runs": 1}


def model_path(task: str, method: str, models_dir: Path | None) -> Path | None:
    """`seg_{task}_{method}.safetensors` in `models_dir`, else from the model catalogue; None when absent."""
    name = f"seg_{task}_{method}"
    if models_dir is not None:
        path = Path(models_dir) / f"{name}.safetensors"
        return path if path.exists() else None
    from ..errors import InputError
    from ..models.catalogue import resolve_model
    try:
        return resolve_model(name)
    except InputError:
        return None


@dataclass
class Case:
    appearance: str                  # "whole head" | "skull-stripped"
    image: np.ndarray                # (X, Y, Z) in [0, 1]
    target: torch.Tensor             # (1, X, Y, Z) int64 (ambiguous: annotators' majority)
    annotators: torch.Tensor | None  # (1, K, X, Y, Z)


def eval_cases(task: str, opts: BenchOptions) -> list[Case]:
    """The same warped, augmented volumes of the held-out template for every model (fixed seed)."""
    data = SegmentationData(task, cache=opts.cache, seg_cache=opts.seg_cache, ndim=3, seed=opts.seed,
                            templates=[opts.hold_out], data={"annotators": {"n": opts.annotators}})
    cases = []
    for appearance, head in (("whole head", True), ("skull-stripped", False)):
        for _ in range(opts.volumes):
            b = data.sample(1, whole_head=head, synthetic=False, real_head=True)
            ann = b.get("annotators")
            cases.append(Case(appearance, b["image"][0, 0].numpy(), majority(ann) if ann is not None else b["target"],
                              ann))
    return cases


def _example_slice(case: Case) -> int:
    ref = case.target[0] if case.annotators is None else case.annotators[0].sum(0)
    area = (ref > 0).flatten(0, 1).sum(0)
    return int(area.argmax())


def run_model(task: str, method: str, path: Path, cases: list[Case], affine: np.ndarray, opts: BenchOptions,
              names: dict[int, str], log: Log) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of one model on all cases, and its entropy on the first case's example slice (for the figure)."""
    from ..io import Volume
    from ..models.weights import load_model
    from ..segmentation import segment

    model, card = load_model(path)
    seen = card.get("training", {}).get("templates") or []
    accs = {a: ScoreAccumulator(model.n_classes) for a in ("whole head", "skull-stripped")}
    seconds, example = [], {}
    for i, case in enumerate(cases):
        keep = opts.samples if case.annotators is not None else 0
        res = segment(Volume(case.image, affine), model, samples=opts.samples, card=card, keep_samples=keep,
                      seed=opts.seed)
        mean = torch.from_numpy(np.asarray(res.probabilities.data, np.float32)).movedim(-1, 0)[None]
        masks = (torch.stack([torch.from_numpy(np.asarray(s.data, np.int64)) for s in res.samples])[:, None]
                 if res.samples else mean.argmax(1)[None])
        accs[case.appearance].add(mean[None], case.target, case.annotators, masks)
        seconds.append(res.timings["segmentation_seconds"])
        if i == 0:
            example = {"entropy": np.asarray(res.entropy.data)[:, :, _example_slice(case)]}
    row = {"method": method, "model": card.get("name"), "iterations": card.get("training", {}).get("iterations"),
           "converged": card.get("converged"), "trained_on": seen,
           **ScoreAccumulator.merged(list(accs.values())).summary(names),
           "dice_whole_head": accs["whole head"].summary(names)["dice"],
           "dice_skull_stripped": accs["skull-stripped"].summary(names)["dice"],
           "seconds_per_volume": float(np.mean(seconds)), "volumes": len(cases), "samples": opts.samples}
    if opts.hold_out in seen:
        row["warning"] = f"this model was trained on {opts.hold_out}: the test head is NOT unseen"
    log(f"[bench]   {task} · {method}: Dice {row['dice']:.3f}, AUROC {row['auroc']:.3f}, ECE {row['ece']:.3f}"
        + (f", GED {row['ged']:.3f}" if "ged" in row else "") + f" ({row['seconds_per_volume']:.1f} s/volume)")
    return row, example


def evaluate_task(task: str, opts: BenchOptions, affine: np.ndarray, log: Log) -> dict[str, Any]:
    paths = {m: model_path(task, m, opts.models_dir) for m in METHODS}
    out: dict[str, Any] = {"task": task, "rows": [], "labels": {}, "example": None,
                           "errors": {m: "no model (train it with `toporeg train segmentation`)"
                                      for m, p in paths.items() if p is None}}
    if all(p is None for p in paths.values()):
        log(f"[bench] {task}: no models, skipped")
        return out
    log(f"[bench] {task}: drawing {2 * opts.volumes} test volumes of {opts.hold_out} …")
    cases = eval_cases(task, opts)
    first = cases[0]
    k = _example_slice(first)
    ref = first.target[0] if first.annotators is None else first.annotators[0].float().mean(0)
    out["example"] = {"image": first.image[:, :, k], "reference": ref[:, :, k].numpy(), "slice": k, "entropy": {}}
    from ..models.weights import read_card
    out["labels"] = {int(c): v for c, v in read_card(next(p for p in paths.values() if p)).get("labels", {}).items()}
    for method, path in paths.items():
        if path is None:
            continue
        try:
            row, example = run_model(task, method, path, cases, affine, opts, out["labels"], log)
            out["rows"].append(row)
            out["example"]["entropy"][method] = example["entropy"]
        except Exception as exc:  # noqa: BLE001 - one failing model must not sink the run
            out["errors"][method] = f"{type(exc).__name__}: {exc}"
            log(f"[bench]   {task} · {method} FAILED {out['errors'][method]}\n{traceback.format_exc()}")
    return out


def cpu_timing(opts: BenchOptions, log: Log) -> dict[str, Any]:
    """Wall time of `segment` (plain U-Net, 1 sample, CPU) on the real Colin27 whole head at 2 mm (91×109×91)."""
    from ..data.resources import sample_path
    from ..io import load_volume
    from ..models.weights import load_model
    from ..segmentation import segment

    for task in ("tissue", "brain", "ambiguous"):
        path = model_path(task, "unet", opts.models_dir)
        if path is not None:
            break
    else:
        return {"seconds": None, "statement": "not measured: no plain U-Net model"}
    model, card = load_model(path)
    volume = load_volume(sample_path("colin27_t1_2mm.nii.gz"))
    runs = []
    for _ in range(max(opts.timing_runs, 1)):
        start = time.perf_counter()
        segment(volume, model, samples=1, card=card, keep_samples=0, device="cpu")
        runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs)
    log(f"[bench] CPU inference ({card.get('name')}): {seconds:.2f} s (median of {len(runs)})")
    return {"model": card.get("name"), "seconds": seconds, "runs": runs, "threads": torch.get_num_threads(),
            "volume": f"colin27_t1_2mm.nii.gz {'x'.join(map(str, volume.grid_shape))} at 2 mm"}


def targets(tasks: list[dict[str, Any]], timing: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met (None: not measurable)."""
    out = []
    for t in tasks:
        for r in t["rows"]:
            out.append({"target": f"{t['task']} · {r['method']}: error-detection AUROC ≥ {AUROC_TARGET}",
                        "measured": f"{r['auroc']:.3f}", "met": bool(r["auroc"] >= AUROC_TARGET)
                        if np.isfinite(r["auroc"]) else None})
    amb = next((t for t in tasks if t["task"] == "ambiguous"), None)
    ged = {r["method"]: r.get("ged") for r in (amb["rows"] if amb else [])}
    if all(ged.get(m) is not None for m in METHODS):
        sampling, single = max(ged["probunet"], ged["mcdropout"]), min(ged["ensemble"], ged["unet"])
        out.append({"target": "ambiguous: GED of probunet and mcdropout < GED of ensemble and unet",
                    "measured": ", ".join(f"{m} {ged[m]:.3f}" for m in METHODS), "met": bool(sampling < single)})
    else:
        out.append({"target": "ambiguous: GED of probunet and mcdropout < GED of ensemble and unet",
                    "measured": "not measured (ambiguous task not run or a model missing)", "met": None})
    sec = timing.get("seconds")
    out.append({"target": f"plain U-Net CPU inference on a 2 mm volume < {CPU_TARGET_S:g} s",
                "measured": "not measured" if sec is None else f"{sec:.2f} s ({timing.get('threads')} threads)",
                "met": None if sec is None else bool(sec < CPU_TARGET_S)})
    return out


def run_benchmark(opts: BenchOptions, log: Log | None = None) -> dict[str, Any]:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    affine = np.asarray(load_cache(opts.cache)["grid_affine"], np.float64)
    tasks = [evaluate_task(task, opts, affine, log) for task in opts.tasks]
    timing = cpu_timing(opts, log)
    doc = {"command": opts.command, "hold_out": opts.hold_out, "volumes_per_appearance": opts.volumes,
           "samples": opts.samples, "annotators": opts.annotators, "seed": opts.seed, "tasks": tasks,
           "cpu_timing": timing, "targets": targets(tasks, timing),
           "timings": {"total_seconds": round(time.perf_counter() - start, 2)}}
    write_outputs(doc, opts.out)
    return doc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporeg bench uncertainty", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--fast", action="store_true", help="1 volume per appearance, 4 samples, 8 annotators")
    p.add_argument("--models", dest="models_dir", help="folder with seg_{task}_{method}.safetensors "
                                                        "(default: the model catalogue)")
    p.add_argument("--tasks", default="tissue,ambiguous,brain", help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--volumes", type=int, help="test volumes per appearance (whole head, skull-stripped)")
    p.add_argument("--samples", type=int, help="samples per volume (default 16)")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--hold-out", dest="hold_out", default="colin27", help="the unseen test template")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--seg-cache", dest="seg_cache", default=str(SEG_CACHE))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        print(f"unknown task(s): {', '.join(unknown)} (available: {', '.join(TASKS)})", file=sys.stderr)
        return 2
    opts = BenchOptions(out=Path(args.out), tasks=tasks, models_dir=Path(args.models_dir) if args.models_dir else None,
                        seed=args.seed, hold_out=args.hold_out, cache=Path(args.cache), seg_cache=Path(args.seg_cache),
                        command="toporeg bench uncertainty " + shlex.join(argv))
    if args.fast:
        opts = replace(opts, **FAST)
    opts = replace(opts, **{k: v for k, v in (("volumes", args.volumes), ("samples", args.samples)) if v})
    run_benchmark(opts)
    print(opts.out / "uncertainty.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
