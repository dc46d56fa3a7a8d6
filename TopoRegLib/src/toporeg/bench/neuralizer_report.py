"""Outputs of `toporeg bench neuralizer`: the Markdown table (score by context size, Neuralizer vs task-specific
U-Net), the targets, the timings, one figure and the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .outputs import write_bench_outputs
from .registration import format_value



def _tick(met: bool | None) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def _digits(metric: str) -> int:
    return 3 if metric == "Dice" else 1


def score_table(doc: dict[str, Any]) -> list[str]:
    sizes = doc["sizes"]
    head = ["task", "seen in training?", "metric"] + [f"n = {n}" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in doc["tasks"]:
        d = _digits(t["metric"])
        cells = [t["name"], "yes" if t["seen"] else "**held out**", t["metric"]]
        for n in sizes:
            s = t["scores"][str(n)]
            nz, un = s["neuralizer"], s["unet"]
            best = "**" if nz > un else ""
            cells.append(f"{best}{format_value(nz, d)}{best} / {format_value(un, d)} / {format_value(s.get('copy'), d)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    m, tm = doc["machine"], doc["timing"]
    training = (doc.get("card") or {}).get("training") or {}
    lines = [
        "# Neuralizer benchmark", "",
        f"- date: {doc['date']}", f"- commit: `{doc['commit']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device "
        f"{m.get('torch_device', '?')}, 15-min load average {m.get('load_average_15min', '?')} when written",
        f"- reproduce: `{doc['command']}`",
        f"- model: `{doc['model']}` ({training.get('iterations', '?')} steps, {training.get('device', '?')}; "
        f"{(doc.get('card') or {}).get('converged', '')})", "",
        "Each cell: **Neuralizer** / task-specific U-Net trained from scratch on the same n examples "
        f"({doc['baseline_steps']} Adam steps, batch 4, random affine jitter; the paper's baseline, far shorter "
        "training) / copy (the mean of the n context outputs taken as the answer: the contexts are aligned brains "
        "and the labels are MNI-space atlases, so this shows what position alone gives). Target: a 2 mm axial slice of **Colin27**, a subject no model saw; context: n augmented "
        "(affine + elastic + intensity) MNI152 slices at the same position ± 1 slice, with their outputs. Neuralizer's "
        f"context is bootstrapped to {doc['max_context']} pairs as at inference. Scores: Dice of the output ≥ 0.5 for "
        "mask tasks, PSNR (peak 1, images in [0, 1]) for image tasks; mean over "
        f"{doc['repeats']} task instance(s) per task (slice, labels and parameters fixed per instance, listed in the "
        "JSON). Bold: Neuralizer better.", "",
    ]
    lines += score_table(doc) + [""]
    lines += ["## Targets (issue #7)", "", "| target | measured | met? |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {_tick(t['met'])} |" for t in doc["targets"]]
    cpu, gpu, vol = tm["cpu_slice"], tm.get("gpu_slice"), tm["cpu_volume"]
    lines += ["", "## Runtime", "",
              f"- per slice (96 × 112, {cpu['context']} context pairs), CPU ({cpu['threads']} threads): "
              f"{cpu['median_s']:.3f} s median (paper: < 3 s on CPU)",
              f"- per slice, GPU: {gpu['median_s']:.4f} s median (paper: < 0.1 s)" if gpu else
              "- per slice, GPU: not measured (no GPU on the machine that wrote this table)",
              f"- per volume, CPU: {vol['seconds']:.1f} s for {vol['volume']} ({vol['slices']} slices, "
              f"{vol['contexts']} MNI152 context volumes each under its own random rigid motion, affine alignment "
              f"included); AAL label {vol['label']} (left thalamus) 3D Dice {vol['dice_3d']:.3f} (copy of the perfectly "
              f"aligned context label: {vol['copy_dice_3d']:.3f})", ""]
    return "\n".join(lines)


def figure(doc: dict[str, Any], path: Path) -> None:
    """Top: score against context size per task; bottom: one example per task (target, truth, both outputs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = doc["tasks"]
    fig, axes = plt.subplots(5, len(tasks), figsize=(3.2 * len(tasks), 15), squeeze=False)
    for col, t in enumerate(tasks):
        ax = axes[0, col]
        sizes = doc["sizes"]
        for key, style in (("neuralizer", "o-"), ("unet", "s--"), ("copy", "^:")):
            ax.plot(sizes, [t["scores"][str(n)][key] for n in sizes], style, label=key)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{t['name']}{'' if t['seen'] else ' (held out)'}", fontsize=9)
        ax.set_xlabel("context / training set size")
        ax.set_ylabel(t["metric"])
        ax.legend(fontsize=7)
        ex = t.get("example")
        for row, (key, title) in enumerate((("target_in", "target (Colin27)"), ("target_out", "truth"),
                                            ("neuralizer", "Neuralizer"), ("unet", "U-Net")), start=1):
            a = axes[row, col]
            if ex is not None:
                a.imshow(np.asarray(ex[key]).T, origin="lower", cmap="gray", vmin=0, vmax=1)
                a.set_title(f"{title}, n = {ex['n']}" if key in ("neuralizer", "unet") else title, fontsize=8)
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_bench_outputs(doc, out_dir, "neuralizer", markdown, figure)
