"""`toporeg bench topology`: a set's summary (pooled AUC, bootstrap over subjects, ROC curve, time per subject)
and the issue's target check, with the paper's figures for reference."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .roc import bootstrap_auc, roc_curve
from .topology_methods import BASELINES
from .topology_scoring import SetScores

TARGET_MARGIN = 0.05
PAPER_AUC = {  # Czolbe et al. 2021 (different data; reference only)
    "cells": {"semantic TopoReg": 0.88, "li_wyatt": 0.75, "jacobian": 0.75, "MSE TopoReg": 0.72},
    "brain": {"semantic TopoReg": 0.80, "li_wyatt": 0.70, "jacobian": 0.62, "MSE TopoReg": 0.61},
}


def _curve(scores: list[np.ndarray], labels: list[np.ndarray], points: int = 200) -> dict[str, list[float]]:
    """The pooled ROC curve, thinned to about `points` points for the JSON and the figure."""
    fpr, tpr, _ = roc_curve(np.concatenate(scores), np.concatenate(labels))
    idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).round().astype(int), len(fpr) - 1])
    return {"fpr": [round(float(v), 5) for v in fpr[idx]], "tpr": [round(float(v), 5) for v in tpr[idx]]}


def summarise(scores: SetScores, n_boot: int, seed: int) -> dict[str, Any]:
    """Rows per method (pooled AUC, bootstrap over subjects, seconds per subject, ROC curve) and the target check."""
    n = len(scores.labels)
    rows = []
    for name, per_subject in scores.scores.items():
        if n == 0 or len(per_subject) != n:
            continue  # failed on some subject: reported in errors
        stats = bootstrap_auc(per_subject, scores.labels, n_boot=n_boot, seed=seed)
        rows.append({"method": name, **stats, "seconds_per_subject": scores.seconds.get(name, 0.0) / max(n, 1),
                     "kind": "baseline" if name in BASELINES else "TopoReg", "semantic": name in scores.semantic,
                     "note": scores.method_notes.get(name) or _baseline_note(name, scores.name),
                     "roc": _curve(per_subject, scores.labels)})
    positives = sum(int(y.sum()) for y in scores.labels)
    return {"name": scores.name, "description": scores.description, "subjects": n, "positive_voxels": positives,
            "scored_voxels": sum(y.size for y in scores.labels), "rows": rows, "errors": scores.errors,
            "notes": scores.notes, "registration_seconds_per_subject":
                scores.seconds.get("registration (shared)", 0.0) / max(n, 1),
            "target": target_check(rows)}


def _baseline_note(name: str, set_name: str) -> str:
    what = {"jacobian": "log(det J_Φ)²", "li_wyatt": "Li & Wyatt 2010 (residual where J has no edge)",
            "intensity": "(I∘Φ − J)²"}[name]
    adjusted = ", minus the control-set mean (outlier setting)" if set_name.startswith("outlier") else ""
    return f"{what}, Φ = TopoReg optimize-intensity's forward μ{adjusted}"


def target_check(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Issue target: the semantic TopoReg model has the highest AUC of all unsupervised methods, ≥ 0.05 above the
    best baseline. Uses the pooled AUC; the best semantic TopoReg variant counts."""
    sem = [r for r in rows if r["semantic"]]
    base = [r for r in rows if r["kind"] == "baseline"]
    if not sem or not base:
        return {"met": None, "statement": "not measured: no semantic TopoReg method in this set"}
    best_sem = max(sem, key=lambda r: r["auc"])
    best_base = max(base, key=lambda r: r["auc"])
    best_other = max((r for r in rows if not r["semantic"]), key=lambda r: r["auc"])
    margin = best_sem["auc"] - best_base["auc"]
    met = best_sem["auc"] > best_other["auc"] and margin >= TARGET_MARGIN
    return {"met": bool(met), "best_semantic": best_sem["method"], "best_semantic_auc": best_sem["auc"],
            "best_baseline": best_base["method"], "best_baseline_auc": best_base["auc"],
            "best_other": best_other["method"], "best_other_auc": best_other["auc"], "margin": margin,
            "statement": f"{best_sem['method']} {best_sem['auc']:.3f} vs best baseline {best_base['method']} "
                         f"{best_base['auc']:.3f} (margin {margin:+.3f}, needs ≥ +{TARGET_MARGIN:.2f}); "
                         f"best non-semantic method {best_other['method']} {best_other['auc']:.3f}"}
