"""Outputs of `toporeg bench uncertainty`: one Markdown table per task, the targets, one figure, the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .outputs import write_bench_outputs
from .registration import format_value

METHOD_NAMES = {"unet": "U-Net (softmax)", "ensemble": "deep ensemble (4)", "mcdropout": "MC-dropout (p = 0.5)",
                "probunet": "probabilistic U-Net"}


def _tick(met: bool | None) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def _task_table(t: dict[str, Any]) -> list[str]:
    labels = {int(k): v for k, v in t.get("labels", {}).items() if int(k) != 0}
    amb = t["task"] == "ambiguous"
    head = (["method", "Dice"] + [f"Dice {v}" for v in labels.values()] + ["Dice head / stripped", "AUROC",
            "H correct", "H wrong", "ECE", "NLL"] + (["GED", "diversity"] if amb else []) + ["s / volume", "steps"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t["rows"]:
        cells = [METHOD_NAMES.get(r["method"], r["method"]), format_value(r["dice"], 3)]
        cells += [format_value(r.get(f"dice_{v}"), 3) for v in labels.values()]
        cells += [f"{format_value(r['dice_whole_head'], 3)} / {format_value(r['dice_skull_stripped'], 3)}",
                  format_value(r["auroc"], 3), format_value(r["entropy_correct"], 3),
                  format_value(r["entropy_wrong"], 3), format_value(r["ece"], 3), format_value(r["nll"], 3)]
        cells += [format_value(r.get("ged"), 3), format_value(r.get("diversity"), 3)] if amb else []
        cells += [format_value(r["seconds_per_volume"], 1), str(r.get("iterations") or "–")]
        lines.append("| " + " | ".join(cells) + " |")
    for method, err in t.get("errors", {}).items():
        lines.append(f"| {METHOD_NAMES.get(method, method)} | {err} |" + " |" * (len(head) - 2))
    warnings = [f"- {r['method']}: {r['warning']}" for r in t["rows"] if r.get("warning")]
    return lines + ([""] + warnings if warnings else [])


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Segmentation uncertainty benchmark", "",
        f"- date: {doc['date']}", f"- commit: `{doc['commit']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device "
        f"{m.get('torch_device', '?')}, 15-min load average {m.get('load_average_15min', '?')} when written",
        f"- reproduce: `{doc['command']}`", "",
        f"Test head: **{doc['hold_out']}**, held out of training entirely; {doc['volumes_per_appearance']} volumes as "
        "the real whole-head scan and as many skull-stripped, each warped (affine + elastic) and augmented (blur, "
        f"resolution, gamma, bias, noise) with seed {doc['seed']}. Every model runs through `toporeg.segmentation."
        f"segment` with {doc['samples']} samples (the plain U-Net's are identical). Dice per class pooled over all "
        "voxels (head / stripped: mean foreground Dice per appearance). AUROC: per-voxel entropy (bits) as a "
        "detector of misclassified voxels; H correct / wrong: mean entropy there; ECE (15 bins) and NLL of the "
        "mean prediction; all in the target and predicted foreground dilated by 4 voxels (ambiguous task: against "
        "the annotators' unanimous label, voxels where they disagree excluded). GED: generalised energy distance, "
        f"d = 1 − IoU, model samples vs {doc['annotators']} simulated annotators, per axial slice through the "
        "structure; diversity: mean d between model samples.", "",
    ]
    for t in doc["tasks"]:
        lines += [f"## {t['task']}", ""] + _task_table(t) + [""]
    lines += ["## Targets (issue #6)", "", "| target | measured | met? |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {_tick(t['met'])} |" for t in doc["targets"]]
    lines += ["", "## Models", ""]
    for t in doc["tasks"]:
        for r in t["rows"]:
            lines.append(f"- `{r.get('model')}` ({t['task']}, {r['method']}): {r.get('iterations')} steps, trained on "
                         f"{', '.join(r.get('trained_on') or ['?'])}; {r.get('converged')}")
    timing = doc["cpu_timing"]
    lines += ["", f"CPU timing: {timing.get('model')} on {timing.get('volume', '–')}: runs "
                  f"{', '.join(f'{s:.2f}' for s in timing.get('runs', []))} s ({timing.get('threads', '?')} threads).",
              ""]
    return "\n".join(lines)


def figure(doc: dict[str, Any], path: Path) -> None:
    """Per task: the example slice, its reference, each model's entropy map, and the AUROC (and GED) bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(METHOD_NAMES)
    tasks = [t for t in doc["tasks"] if t.get("example") is not None]
    if not tasks:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no segmentation models were found", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    fig, axes = plt.subplots(len(tasks), 7, figsize=(19, 3.1 * len(tasks)), squeeze=False)
    for row, t in zip(axes, tasks):
        ex = t["example"]
        row[0].imshow(np.asarray(ex["image"]).T, origin="lower", cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{t['task']}: test slice k={ex['slice']}", fontsize=9)
        ref = np.asarray(ex["reference"])
        row[1].imshow(ref.T, origin="lower", cmap="viridis", vmin=0, vmax=max(float(ref.max()), 1.0))
        row[1].set_title("annotator agreement" if t["task"] == "ambiguous" else "reference labels", fontsize=9)
        vmax = max([float(np.max(e)) for e in ex["entropy"].values()] + [1e-3])
        for ax, method in zip(row[2:6], methods):
            if method in ex["entropy"]:
                ax.imshow(np.asarray(ex["entropy"][method]).T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(f"entropy: {method}", fontsize=9)
        for ax in row[:6]:
            ax.axis("off")
        rows = {r["method"]: r for r in t["rows"]}
        x = np.arange(len(methods))
        row[6].bar(x - 0.2, [rows[m]["auroc"] if m in rows else 0 for m in methods], 0.4, label="AUROC")
        if t["task"] == "ambiguous":
            row[6].bar(x + 0.2, [rows[m].get("ged", 0) if m in rows else 0 for m in methods], 0.4, label="GED")
        row[6].axhline(0.85, color="grey", ls="--", lw=1)
        row[6].set_xticks(x, methods, fontsize=7)
        tops = [r.get("ged", 0.0) for r in t["rows"]] + [1.0]
        row[6].set_ylim(0, 1.05 * max(tops))
        row[6].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_bench_outputs(doc, out_dir, "uncertainty", markdown, figure)
