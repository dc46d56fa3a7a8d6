"""Outputs of `toporeg bench dio` and `toporeg bench carl`: the shared command line, mean ± sd tables (one row per
method; columns are metrics or conditions), the stamped header, NAME.json / NAME.md / NAME.png."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .outputs import write_bench_outputs
from .registration import format_value

TEMPLATE_NOTE = ("The templates are the ones the 2D models were trained on (ICBM152 2009a, Colin27), so "
                 "'in-domain' means known anatomy under a new random deformation and intensity change, **not** "
                 "unseen subjects.")
METRICS = {"dice": ("Dice", 3), "p95_error_mm": ("p95 error (mm)", 2), "folding_percent": ("folding (%)", 3),
           "seconds": ("time (s)", 2), "equivariance_mean_mm": ("mean ‖u_T − (u + s)‖ (mm)", 2),
           "equivariance_p95_mm": ("p95 ‖u_T − (u + s)‖ (mm)", 2)}
BASIC = ("dice", "p95_error_mm", "folding_percent", "seconds")


def parser(prog: str, description: str, models: Sequence[str], default_cases: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", default="docs/benchmarks", help="output folder (created if missing)")
    p.add_argument("--cases", type=int, default=None, help=f"number of 2D pairs (default {default_cases}: 3 slices "
                   "× 2 templates)")
    p.add_argument("--quick", action="store_true", help="one pair and fewer variants: a smoke run")
    p.add_argument("--seed", type=int, default=0, help="seed of the random fields and misalignment directions")
    for m in models:
        p.add_argument(f"--{m}-model", default=None, help=f"{m} weights (bundled name or .safetensors path; default: "
                       f"the bundled 2D {m} model)")
    return p


def values(rows: list[dict[str, Any]], metric: str, method: str, conditions: Sequence[str]) -> list[float]:
    return [float(r[metric]) for r in rows if r["method"] == method and r["condition"] in conditions
            and "error" not in r and r.get(metric) is not None]


def mean_sd(vals: list[float], digits: int) -> str:
    if not vals:
        return "–"
    sd = f" ± {format_value(float(np.std(vals)), digits)}" if len(vals) > 1 else ""
    return f"{format_value(float(np.mean(vals)), digits)}{sd}"


def summary(rows: list[dict[str, Any]], methods: Sequence[str], conditions: Sequence[str]) -> dict[str, Any]:
    """method → condition → metric → {mean, sd, n} (for the JSON)."""
    out: dict[str, Any] = {}
    for m in methods:
        for c in conditions:
            out.setdefault(m, {})[c] = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)}
                                        for k in METRICS if (v := values(rows, k, m, [c]))}
    return out


def failures(rows: list[dict[str, Any]], method: str, conditions: Sequence[str]) -> str:
    n = sum(1 for r in rows if r["method"] == method and r["condition"] in conditions and "error" in r)
    return f" ({n} failed)" if n else ""


def metric_table(rows: list[dict[str, Any]], methods: Sequence[str], conditions: Sequence[str],
                 metrics: Sequence[str] = BASIC) -> list[str]:
    """One row per method: mean ± sd of each metric, pooled over `conditions`."""
    lines = ["| method | " + " | ".join(METRICS[k][0] for k in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for m in methods:
        cells = [mean_sd(values(rows, k, m, conditions), METRICS[k][1]) for k in metrics]
        lines.append(f"| {m}{failures(rows, m, conditions)} | " + " | ".join(cells) + " |")
    return lines + [""]


def pivot_table(rows: list[dict[str, Any]], methods: Sequence[str], metric: str, columns: dict[str, str]) -> list[str]:
    """One row per method, one column per condition (key → header): mean ± sd of `metric`."""
    digits = METRICS[metric][1]
    lines = ["| method | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in methods:
        cells = [mean_sd(values(rows, metric, m, [c]), digits) + failures(rows, m, [c]) for c in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def header(doc: dict[str, Any], title: str) -> list[str]:
    m = doc["machine"]
    models = ", ".join(f"{k}: `{v}`" for k, v in doc["models"].items())
    return [f"# {title}", "", f"- reproduce: `{doc['command']}`", f"- date: {doc['date']}",
            f"- commit: `{doc['commit']}`",
            f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device "
            f"{m.get('torch_device', '?')} ({m.get('torch_threads', '?')} threads), 15-min load average "
            f"{m.get('load_average_15min', '?')} when written", f"- models: {models}", ""]


def case_lines(doc: dict[str, Any]) -> list[str]:
    return ["## Cases", "", TEMPLATE_NOTE, ""] + [f"- `{c['name']}`: {c['description']}" for c in doc["cases"]] + [
        "", "## Methods", ""] + [f"- **{k}**: {v}" for k, v in doc["methods"].items()] + [""]


def figure(doc: dict[str, Any], path: Path, columns: dict[str, str], ylabel: str = "mean Dice") -> None:
    """Mean Dice per method (one line each) across the conditions (x)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 4, 4))
    x = np.arange(len(columns))
    for m in doc["methods"]:
        y = [np.mean(v) if (v := values(doc["rows"], "dice", m, [c])) else np.nan for c in columns]
        ax.plot(x, y, marker="o", label=m)
    ax.set_xticks(x, list(columns.values()), rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out_dir: str | Path, name: str, markdown: Callable[[dict[str, Any]], str],
                  columns: dict[str, str]) -> list[Path]:
    """NAME.json, NAME.md and NAME.png in `out_dir`, stamped with the date, commit and machine."""
    return write_bench_outputs(doc, Path(out_dir), name, markdown, lambda d, path: figure(d, path, columns))
