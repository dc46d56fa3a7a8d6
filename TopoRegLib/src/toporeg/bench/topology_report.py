"""`toporeg bench topology`: the outputs: Markdown report, JSON document, one ROC figure per set and the example
panel (the first subject of every set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .registration import format_value
from .topology_scoring import SetScores
from .topology_summary import PAPER_AUC, TARGET_MARGIN

JSON_NAME, MD_NAME, PNG_STEM = "topology_benchmark.json", "topology_benchmark.md", "topology_benchmark"


def _paper_key(set_name: str) -> str:
    return "cells" if set_name.startswith("cells") else "brain"


def _tick(met: bool | None) -> str:
    return "–" if met is None else ("✔" if met else "✘")


def _set_table(s: dict[str, Any]) -> list[str]:
    lines = [f"## {s['name']}", "", s["description"], "",
             f"{s['subjects']} subjects, {s['scored_voxels']} scored voxels ({s['positive_voxels']} changed); shared "
             f"registration {s['registration_seconds_per_subject']:.1f} s per subject.", "",
             "| method | AUC (pooled) | bootstrap mean ± std | 95 % interval | time per subject (s) |",
             "|---|---|---|---|---|"]
    for r in sorted(s["rows"], key=lambda r: -r["auc"]):
        lines.append(f"| {r['method']} | {r['auc']:.3f} | {format_value(r['mean'], 3)} ± {format_value(r['std'], 3)} | "
                     f"{format_value(r['p2_5'], 3)}–{format_value(r['p97_5'], 3)} | {r['seconds_per_subject']:.2f} |")
    lines += [f"| {m} | failed: {e} | | | |" for m, e in s["errors"].items()]
    paper = ", ".join(f"{k} {v:.2f}" for k, v in PAPER_AUC[_paper_key(s["name"])].items())
    lines += ["", f"Paper reference ({_paper_key(s['name'])}, different data): {paper}.", "",
              f"Target (semantic TopoReg best of all, ≥ +{TARGET_MARGIN:.2f} over the best baseline): "
              f"{_tick(s['target']['met'])} {s['target']['statement']}", ""]
    lines += [f"- note: {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    return lines + [f"![ROC {s['name']}]({PNG_STEM}_roc_{s['name']}.png)", ""]


def _aware_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    spacing = ", ".join(f"{r['name']} {r['spacing_mm']:g} mm" for r in rows)
    lines = ["## Topology-aware registration", "",
             "Lesion cases with mass effect (intra-subject, so the true field is known: nuisance deformation ∘ mass "
             "effect). Plain: `toporeg.registration.register`. Topology-aware: the training-free intensity "
             "heatmap (`topology_heatmap`), then `register(..., weights = 1 − display map)`; its time includes the "
             "heatmap. "
             f"Error: mean |u − u_true| in mm (voxel spacing: {spacing}), inside the lesion, in the ring 2–6 voxels "
             "around it (inside the brain), and over the brain.", "",
             "| set | cases | variant | lesion (mm) | ring (mm) | brain (mm) | time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for variant in ("plain", "aware"):
            m = r["mean"].get(variant)
            if m:
                lines.append(f"| {r['name']} | {r['cases']} | {variant} | {m['lesion']:.2f} | {m['ring']:.2f} | "
                             f"{m['brain']:.2f} | {m['seconds']:.1f} |")
    return lines + [""]


def _paper_table() -> list[str]:
    lines = ["## Reference: the paper's figures (Czolbe et al. 2021; different data, reference only)", "",
             "| data | semantic TopoReg | Li & Wyatt | Jacobian | MSE TopoReg |", "|---|---|---|---|---|"]
    for data, v in PAPER_AUC.items():
        lines.append(f"| {data} | {v['semantic TopoReg']:.2f} | {v['li_wyatt']:.2f} | {v['jacobian']:.2f} | "
                     f"{v['MSE TopoReg']:.2f} |")
    return lines + [""]


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = ["# Topological-change benchmark", "",
             f"- date: {doc['date']}", f"- commit: `{doc['commit']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device "
             f"{m.get('torch_device', '?')}, {m.get('torch_threads', '?')} torch threads, 15-min load average "
             f"{m.get('load_average_15min', '?')} when written",
             f"- reproduce: `{doc['command']}`", f"- total wall time: {doc['total_seconds']:.0f} s", "",
             "Pixel-wise ROC over the scored voxels of all subjects pooled; error bars: subjects resampled with "
             f"replacement ({doc['size']['n_boot']} bootstrap draws, voxels pooled). Every TopoReg method of a pair "
             "starts from the same engine registration; the baselines use TopoReg optimize-intensity's forward μ "
             "(the same registration, refined by its ELBO fit). TopoReg maps are L_sym(J|I) (pairs) or Q(J) "
             "(outlier set), in nats per voxel. Time per subject: the method's own fitting (both directions; in the "
             "outlier set including the control-set fits, amortised over the tests); the shared registration is "
             "listed once per set.", "", f"![first subject of every set]({PNG_STEM}_examples.png)", "",
             "## Targets", "", "| set | target met | |", "|---|---|---|"]
    lines += [f"| {s['name']} | {_tick(s['target']['met'])} | {s['target']['statement']} |" for s in doc["sets"]]
    lines.append("")
    for s in doc["sets"]:
        lines += _set_table(s)
    if doc["topology_aware"]:
        lines += _aware_table(doc["topology_aware"])
    lines += _paper_table()
    lines += ["## Methods", ""] + [f"- `{k}`: {v}" for k, v in doc["methods"].items()] + [""]
    return "\n".join(lines)


def roc_figure(s: dict[str, Any], path: Path) -> None:
    """Pooled ROC curves of one set, AUC in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for r in sorted(s["rows"], key=lambda r: -r["auc"]):
        style = "-" if r["kind"] == "TopoReg" else "--"
        ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], style, lw=1.5, label=f"{r['method']} ({r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=s["name"], xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, name: str, img: np.ndarray, mask: np.ndarray | None) -> None:
    """Images in grey at their 1–99.5 % range, the truth at 0–1, maps in magma within the scoring mask."""
    is_image = name.startswith(("J ", "I "))
    shown = img if mask is None or is_image or name == "truth" else np.where(mask > 0, img, np.nan)
    lo, hi = (0.0, 1.0) if name == "truth" else np.nanpercentile(shown, [1, 99.5])
    ax.imshow(np.rot90(shown), cmap="gray" if is_image else "magma", vmin=lo, vmax=hi)
    ax.set_title(name.replace("TopoReg ", ""), fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])


def example_figure(sets: Sequence[SetScores], path: Path) -> None:
    """One row per set: the first subject's J, I, true change, and every method's map (3D: the axial slice
    with the largest change)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [s for s in sets if s.example]
    cols = max(len(s.example) - ("mask" in s.example) for s in rows) if rows else 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.1 * len(rows)), squeeze=False)
    for ax_row, s in zip(axes, rows):
        mask = s.example.get("mask")
        items = [(k, v) for k, v in s.example.items() if k != "mask"]
        for ax, (name, img) in zip(ax_row, items):
            _panel(ax, name, img, mask)
        ax_row[0].set_ylabel(s.name, fontsize=8)
        for ax in ax_row[len(items):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], sets: Sequence[SetScores], out_dir: Path) -> list[Path]:
    """Markdown, JSON, one ROC PNG per set and the example panel; written only once everything was computed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / MD_NAME, out_dir / JSON_NAME]
    for s in doc["sets"]:
        paths.append(out_dir / f"{PNG_STEM}_roc_{s['name']}.png")
        roc_figure(s, paths[-1])
    paths.append(out_dir / f"{PNG_STEM}_examples.png")
    example_figure(sets, paths[-1])
    (out_dir / JSON_NAME).write_text(json.dumps(doc, indent=2, default=float, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / MD_NAME).write_text(markdown(doc), encoding="utf-8")
    return paths
