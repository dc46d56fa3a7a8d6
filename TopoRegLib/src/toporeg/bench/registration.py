"""`toporeg bench registration`: run methods on the benchmark cases, score them the same way, write
`registration_benchmark.md` / `.json` / `.png` into the output folder.

    python -m toporeg.bench.registration --out docs/benchmarks [--cases colin_random,...] [--methods ...] [--slow]

Every method is a callable (fixed, moving) -> PeerResult (see `peers.py`); TopoReg's own methods come
from `toporeg.registration.bench_adapters.toporeg_methods()` when that module exists.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .cases import CASES, Case, load_case
from .metrics import (displacement_error_p95, folding_percent, landmark_error, mean_dice,
                      warp_with_physical_field)
from .peers import Method, PeerResult, direction_check, peer_methods

JSON_NAME, MD_NAME, PNG_NAME = "registration_benchmark.json", "registration_benchmark.md", "registration_benchmark.png"


# --- which methods --------------------------------------------------------------------------------------
def toporeg_methods_if_available() -> dict[str, Method]:
    """TopoReg's own methods (hook for the registration engine); {} with a message when not there yet.

    Contract for `toporeg.registration.bench_adapters.toporeg_methods()`: return {name: method}, each
    method `(fixed: Volume, moving: Volume) -> toporeg.bench.peers.PeerResult` with `u_ras` on the fixed
    grid (RAS mm, x_moving = x_fixed + u) and the call timed with `toporeg.bench.peers.Measure`
    (`with Measure() as m: ...` → `m.seconds`, `m.peak_mb`); `warped` (the method's own output on the
    fixed grid) is optional and feeds the direction check.
    """
    try:
        from ..registration.bench_adapters import toporeg_methods  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"[bench] TopoReg methods skipped: toporeg.registration.bench_adapters not importable ({exc})",
              file=sys.stderr)
        return {}
    return dict(toporeg_methods())


def default_methods(*, slow: bool = False) -> dict[str, Method]:
    return {**toporeg_methods_if_available(), **peer_methods(slow=slow)}


# --- scoring --------------------------------------------------------------------------------------------
def score(case: Case, result: PeerResult) -> dict[str, Any]:
    """All metrics of one result; fields that do not apply to the case are None."""
    mask = None if case.fixed_mask is None else case.fixed_mask.data > 0
    warped_labels = warp_with_physical_field(case.moving_labels, case.fixed, result.u_ras, "nearest")
    return {
        "dice": mean_dice(case.fixed_labels, warped_labels),
        "p95_error_mm": None if case.gt_u_ras is None else displacement_error_p95(result.u_ras, case.gt_u_ras, mask),
        "folding_percent": folding_percent(result.u_ras, case.fixed, mask),
        "landmark_mm": None if case.fixed_landmarks is None else landmark_error(
            result.u_ras, case.fixed, case.fixed_landmarks, case.moving_landmarks),
        "seconds": result.seconds,
        "peak_rss_mb": result.peak_rss_mb,
        "direction_check_corr": direction_check(result, case.fixed, case.moving, mask),
        "notes": result.notes,
    }


def run_benchmark(methods: dict[str, Method], cases: Iterable[Case], out_dir: str | Path, *,
                  command: str | None = None, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every method on every case; writes the Markdown table, JSON and figure into `out_dir`; returns the rows."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cases = list(cases)
    rows: list[dict[str, Any]] = []
    for case in cases:
        for name, method in methods.items():
            log(f"[bench] {case.name} · {name} …")
            row: dict[str, Any] = {"case": case.name, "method": name}
            try:
                row.update(score(case, method(case.fixed, case.moving)))
                if np.isfinite(row["direction_check_corr"]) and row["direction_check_corr"] < 0.99:
                    row["notes"] += f" | WARNING: field disagrees with the method's own output (r={row['direction_check_corr']:.3f})"
                log(f"[bench]   Dice {row['dice']:.3f}  {row['seconds']:.1f} s  {row['peak_rss_mb']:.0f} MB")
            except Exception as exc:  # noqa: BLE001 - one failing peer must not sink the run
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"[bench]   FAILED {row['error']}\n{traceback.format_exc()}")
            rows.append(row)
    write_outputs(rows, cases, Path(out_dir), command=command)
    return rows


# --- provenance -------------------------------------------------------------------------------------------
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git commit)"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil
        ram_gb = psutil.virtual_memory().total / 2**30
    except ImportError:
        ram_gb = float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": cpu, "cores": cores, "ram_gb": round(ram_gb, 1), "platform": platform.platform(),
                            "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_average_15min"] = round(os.getloadavg()[2], 2)  # > cores means timings were contended
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_device"] = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    for mod in ("ants", "itk", "SimpleITK"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed: not reported
            pass
    return info


# --- outputs ------------------------------------------------------------------------------------------------
def format_value(value: Any, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]], cases: list[Case], header: dict[str, Any]) -> str:
    m = header["machine"]
    lines = [
        "# Registration benchmark", "",
        f"- date: {header['date']}", f"- commit: `{header['commit']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device {m.get('torch_device', '?')}, "
        f"15-min load average {m.get('load_average_15min', '?')} when written",
        f"- reproduce: `{header['command']}`", "",
        "Dice: mean over the fixed image's labels (background excluded), moving labels pulled through each method's "
        "field with nearest neighbour. p95: 95th percentile of |u − u_true| (mm) in the fixed brain mask. Folding: % of "
        "voxels with det J ≤ 0 in that mask (toporeg.transforms.jacobian). Time: wall seconds of the registration call "
        "only; memory: peak RSS above the RSS before the call. r: correlation of our resampling through the returned "
        "field with the method's own warped image (direction check).", "",
    ]
    for case in cases:
        lines += [f"## {case.name}", "", case.description, "",
                  "| method | Dice | p95 error (mm) | folding (%) | landmarks (mm) | time (s) | peak RSS (MB) | r |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["case"] == case.name):
            if "error" in r:
                lines.append(f"| {r['method']} | failed: {r['error']} | | | | | | |")
                continue
            lines.append(f"| {r['method']} | {format_value(r['dice'], 3)} | {format_value(r['p95_error_mm'], 2)} | "
                         f"{format_value(r['folding_percent'], 3)} | {format_value(r['landmark_mm'], 1)} | {format_value(r['seconds'], 1)} | "
                         f"{format_value(r['peak_rss_mb'], 0)} | {format_value(r['direction_check_corr'], 3)} |")
        lines.append("")
    notes = {r["method"]: r.get("notes", "") for r in rows if "error" not in r}
    lines += ["## Methods", ""] + [f"- `{k}`: {v}" for k, v in notes.items()] + [""]
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], cases: list[Case], path: Path) -> None:
    """Dice vs wall time per case (log time); the identity row is drawn as the 'before' line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for r in (r for r in rows if r["case"] == case.name and "error" not in r):
            if r["method"] == "identity":
                ax.axhline(r["dice"], color="grey", ls="--", lw=1, label="before (identity)")
                continue
            ax.scatter(max(r["seconds"], 0.05), r["dice"], s=40)
            ax.annotate(r["method"], (max(r["seconds"], 0.05), r["dice"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wall time (s, log)")
        ax.set_ylabel("mean Dice")
        ax.set_title(case.name, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], cases: list[Case], out_dir: Path, *, command: str | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_commit(),
              "machine": machine(), "command": command or "python -m toporeg.bench.registration --out " + str(out_dir)}
    doc = {**header, "cases": [{"name": c.name, "description": c.description} for c in cases], "results": rows}
    (out_dir / JSON_NAME).write_text(json.dumps(doc, indent=2, default=float) + "\n", encoding="utf-8")
    (out_dir / MD_NAME).write_text(markdown(rows, cases, header), encoding="utf-8")
    figure(rows, cases, out_dir / PNG_NAME)


# --- command line -------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporeg bench registration", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--methods", default="", help="comma-separated method names (default: all available)")
    p.add_argument("--slow", action="store_true", help="also run ANTs SyNOnly CC (100,70,50): several minutes per case")
    p.add_argument("--rebuild-cases", action="store_true", help="rebuild the cached cases")
    p.add_argument("--list", action="store_true", help="print the available cases and methods, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    methods = default_methods(slow=args.slow or "ants_synonly_cc" in args.methods)
    if args.list:
        print("cases:  ", ", ".join(CASES))
        print("methods:", ", ".join(methods))
        return 0
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in methods]
        if unknown:
            print(f"unknown method(s): {', '.join(unknown)} (available: {', '.join(methods)})", file=sys.stderr)
            return 2
        methods = {m: methods[m] for m in wanted}
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)} (available: {', '.join(CASES)})", file=sys.stderr)
        return 2
    cases = [load_case(n, rebuild=args.rebuild_cases) for n in names]
    command = "python -m toporeg.bench.registration " + shlex.join(argv)
    run_benchmark(methods, cases, args.out, command=command)
    print(Path(args.out) / MD_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
