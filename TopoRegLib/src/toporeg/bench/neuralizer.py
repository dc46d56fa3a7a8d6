"""`toporeg bench neuralizer`: Neuralizer against a task-specific U-Net trained on the same examples, by context
size, for seen and held-out tasks, on a subject no model saw (Colin27); plus CPU (and GPU) runtimes.

For every benchmark task and repeat, one task instance is fixed (slice position, labels, noise level...) and, for
each context size n, `NeuralizerData.fixed_episode` gives the Colin27 target slice and n augmented MNI152 context
pairs at that position. Neuralizer predicts in one forward pass (context bootstrapped to the card's max_context, as
at inference); the baseline U-Net is trained from scratch on the same n pairs (`neuralizer_baseline`); "copy" is
the mean of the n context outputs used as the prediction (the contexts are affinely aligned brains with atlas
labels in MNI space, so position alone already says much: this column shows how much). All are scored the same way
(Dice of y ≥ 0.5, PSNR with peak 1). The volume timing runs the full `neuralize` pipeline
(affine alignment of every context included) on the Colin27 volume.

    toporeg bench neuralizer [--out docs/benchmarks] [--model neuralizer_2d|PATH] [--sizes 1,2,4,8,16]
                             [--repeats 2] [--baseline-steps 150] [--fast]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.catalogue import resolve_model
from ..models.weights import load_model
from ..neuralizer.bootstrap import bootstrap_context
from ..neuralizer.data import NeuralizerData
from ..neuralizer.data_cache import NEURALIZER_CACHE
from ..neuralizer.scoring import score
from ..neuralizer.tasks import SEGMENT, TASKS
from .metrics import mask_dice
from .neuralizer_baseline import predict, train_task_unet


@dataclass(frozen=True)
class BenchTask:
    name: str
    task: str
    seen: bool
    options: dict = field(default_factory=dict)


BENCH_TASKS = (
    BenchTask("segment AAL regions", "segment", True, {"protocol": "aal"}),
    BenchTask("segment Brodmann areas", "segment", False, {"protocol": "brodmann"}),
    BenchTask("skull stripping", "skull_strip", True),
    BenchTask("denoising", "denoise", True, {"sigma": 0.1, "rician": False}),
    BenchTask("bias-field removal", "bias_removal", False, {"strength": 0.6}),
)
PAIRS = (("segment Brodmann areas", "segment AAL regions"), ("bias-field removal", "denoising"))


@dataclass
class BenchOptions:
    out: Path = Path("docs/benchmarks")
    model: str = "neuralizer_2d"
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    repeats: int = 2
    baseline_steps: int = 150
    cache: Path = NEURALIZER_CACHE
    seed: int = 0
    volume_contexts: int = 4
    command: str = "toporeg bench neuralizer"


FAST = {"sizes": (1, 4), "repeats": 1, "baseline_steps": 20, "volume_contexts": 1}


def _fix_task(data: NeuralizerData, bt: BenchTask, seed: int) -> dict[str, Any]:
    """The task instance of one repeat: drawn once (with one context), then passed explicitly for every n."""
    info = data.fixed_episode(bt.task, n_context=1, seed=seed, **bt.options)["info"][0]
    fixed = {"slice_index": info["slice"], **bt.options}
    keep = ("protocol", "labels") if bt.task == "segment" else tuple(bt.options)
    return {**fixed, **{k: info[k] for k in keep if k in info}}


def run_task(model: torch.nn.Module, max_context: int, data: NeuralizerData, bt: BenchTask,
             opts: BenchOptions) -> dict[str, Any]:
    rows: dict[int, dict[str, list[float]]] = {n: {"neuralizer": [], "unet": [], "copy": []} for n in opts.sizes}
    instances, example = [], None
    for r in range(opts.repeats):
        seed = opts.seed * 1000 + 17 * r + 1
        fixed = _fix_task(data, bt, seed)
        instances.append(dict(fixed))
        for n in opts.sizes:
            ep = data.fixed_episode(bt.task, n_context=n, seed=seed + n, **fixed)
            seg = bool(ep["is_segment"][0])
            g = torch.Generator().manual_seed(seed + n)
            ci, co = bootstrap_context(ep["context_in"], ep["context_out"], max_context, generator=g)
            with torch.no_grad():
                y = model(ep["target_in"], ci, co)
            rows[n]["neuralizer"].append(score(y[0], ep["target_out"][0], seg))
            unet = train_task_unet(ep["context_in"][0], ep["context_out"][0], seg, steps=opts.baseline_steps,
                                   seed=seed + n)
            y_unet = predict(unet, ep["target_in"])
            rows[n]["unet"].append(score(y_unet[0], ep["target_out"][0], seg))
            copy = ep["context_out"][0].mean(0)  # the context outputs, averaged: what position alone gives
            rows[n]["copy"].append(score(copy, ep["target_out"][0], seg))
            if r == 0 and n == min(opts.sizes, key=lambda s: abs(s - 4)):
                example = {"target_in": ep["target_in"][0, 0].numpy(), "target_out": ep["target_out"][0, 0].numpy(),
                           "context_in": ep["context_in"][0, 0, 0].numpy(), "context_out": ep["context_out"][0, 0, 0].numpy(),
                           "neuralizer": y[0, 0].numpy(), "unet": y_unet[0, 0].numpy(), "n": n}
    metric = "Dice" if TASKS[bt.task].kind == SEGMENT else "PSNR (dB)"
    return {"name": bt.name, "task": bt.task, "seen": bt.seen, "metric": metric, "instances": instances,
            "scores": {str(n): {k: float(np.mean(v)) for k, v in rows[n].items()} for n in opts.sizes},
            "raw": {str(n): rows[n] for n in opts.sizes}, "example": example}


def targets(tasks: list[dict[str, Any]], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Issue #7's two targets, evaluated on the measured scores."""
    by_name = {t["name"]: t for t in tasks}
    out = []
    small = [n for n in sizes if n <= 8]
    for t in tasks:
        if t["seen"]:
            continue
        wins = [t["scores"][str(n)]["neuralizer"] > t["scores"][str(n)]["unet"] for n in small]
        out.append({"target": f"{t['name']} (held out): Neuralizer beats the task-specific U-Net at n ≤ 8",
                    "measured": f"wins at {sum(wins)}/{len(wins)} context sizes", "met": all(wins)})
    for unseen, seen in PAIRS:
        if unseen in by_name and seen in by_name:
            u = np.mean([by_name[unseen]["scores"][str(n)]["neuralizer"] for n in sizes])
            s = np.mean([by_name[seen]["scores"][str(n)]["neuralizer"] for n in sizes])
            gap = (s - u) / abs(s) * 100
            out.append({"target": f"unseen {unseen} within 5 % of seen {seen} ({by_name[seen]['metric']}, mean "
                                  "over context sizes)", "measured": f"{u:.3f} vs {s:.3f} ({gap:+.1f} %)",
                        "met": bool(gap <= 5.0)})
    return out


def time_slices(model: torch.nn.Module, max_context: int, device: str, repeats: int = 5) -> dict[str, Any]:
    """Seconds per 96 × 112 slice with a bootstrapped context set of `max_context` pairs."""
    dev = torch.device(device)
    m = model.to(dev).eval()
    x, ci, co = torch.rand(1, 3, 96, 112, device=dev), torch.rand(1, max_context, 3, 96, 112, device=dev), \
        torch.rand(1, max_context, 1, 96, 112, device=dev)
    runs = []
    with torch.no_grad():
        m(x, ci, co)
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m(x, ci, co)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t0)
    model.to("cpu")
    return {"device": device, "context": max_context, "median_s": float(np.median(runs)), "runs": runs,
            "threads": torch.get_num_threads()}


def time_volume(model_path: Path, n_contexts: int, cache: dict[str, Any]) -> dict[str, Any]:
    """The whole `neuralize` pipeline on the Colin27 volume with `n_contexts` MNI152 (image, AAL) pairs."""
    from ..neuralizer.inference import neuralize
    from .neuralizer_volume import colin27_volume_case

    target, contexts, reference, label = colin27_volume_case(cache, n_contexts)
    t0 = time.perf_counter()
    result = neuralize(target, contexts, model=model_path, task="segment", label_value=label, device="cpu")
    seconds = time.perf_counter() - t0
    ref = np.asarray(reference.data) == label
    dice = mask_dice(result.prediction, ref)
    slices = target.data.shape[2]
    copy = mask_dice(np.asarray(cache["mni152_aal"]) == label, ref)  # the context label, perfectly aligned
    return {"seconds": seconds, "slices": int(slices), "contexts": n_contexts, "label": label, "dice_3d": dice,
            "copy_dice_3d": copy,
            "timings": result.report.get("timings", {}), "volume": "Colin27 2 mm (held out), axial"}


def run_benchmark(opts: BenchOptions) -> list[Path]:
    from .neuralizer_report import write_outputs
    from ..neuralizer.data_cache import load_neuralizer_cache

    path = resolve_model(opts.model)
    model, card = load_model(path)
    model.eval()
    max_context = int(card.get("neuralizer", {}).get("max_context", 8))
    cache = load_neuralizer_cache(opts.cache)
    data = NeuralizerData(cache, subjects=("mni152",), seed=opts.seed)
    tasks = []
    for bt in BENCH_TASKS:
        t0 = time.perf_counter()
        tasks.append(run_task(model, max_context, data, bt, opts))
        print(f"{bt.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    timing = {"cpu_slice": time_slices(model, max_context, "cpu"),
              "gpu_slice": time_slices(model, max_context, "cuda") if torch.cuda.is_available() else None,
              "cpu_volume": time_volume(path, opts.volume_contexts, cache)}
    doc = {"command": opts.command, "model": path.name, "card": {k: card.get(k) for k in ("training", "converged")},
           "max_context": max_context, "sizes": list(opts.sizes), "repeats": opts.repeats,
           "baseline_steps": opts.baseline_steps, "tasks": tasks, "targets": targets(tasks, opts.sizes),
           "timing": timing}
    return write_outputs(doc, opts.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporeg bench neuralizer", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--model", default="neuralizer_2d", help="bundled model name or weights path")
    p.add_argument("--sizes", help="context sizes, comma-separated (default 1,2,4,8,16)")
    p.add_argument("--repeats", type=int, help="task instances per task (default 2)")
    p.add_argument("--baseline-steps", type=int, dest="baseline_steps", help="U-Net training steps (default 150)")
    p.add_argument("--cache", default=str(NEURALIZER_CACHE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="a quick smoke run (sizes 1,4; 1 repeat; 20 U-Net steps)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    opts = BenchOptions(out=Path(args.out), model=args.model, cache=Path(args.cache), seed=args.seed,
                        command="toporeg bench neuralizer " + shlex.join(argv))
    if args.fast:
        opts = replace(opts, **FAST)
    if args.sizes:
        opts = replace(opts, sizes=tuple(int(s) for s in args.sizes.split(",")))
    opts = replace(opts, **{k: v for k, v in (("repeats", args.repeats), ("baseline_steps", args.baseline_steps))
                            if v})
    for path in run_benchmark(opts):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
