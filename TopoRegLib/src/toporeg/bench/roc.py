"""Pixel-wise ROC curves and AUC (exact, tie-aware), and AUC error bars bootstrapped over subjects. numpy only.

AUC is the Mann–Whitney probability P(score_pos > score_neg) + ½ P(tie) over all positive/negative voxel pairs,
which equals the trapezoidal area under `roc_curve` (ties form one diagonal step). Subject-level bootstrap as in
Czolbe et al. 2021: resample subjects with replacement and pool their voxels; it is computed exactly from a
subject × subject matrix of pair wins, so each resample costs O(subjects²) instead of a sort of all voxels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _flatten(scores, labels, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float64) and bool labels of the voxels in `mask` (all when None), flattened."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    keep = np.ones(s.shape, bool) if mask is None else np.asarray(mask).reshape(s.shape).astype(bool)
    s, y = s[keep], y[keep].astype(bool)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def _counts(y: np.ndarray) -> tuple[int, int]:
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        raise ValueError(f"ROC needs both classes: {pos} positive and {neg} negative voxels")
    return pos, neg


def roc_curve(scores, labels, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score (descending), starting at (0, 0) with threshold +inf.

    A voxel is called positive when its score ≥ the threshold."""
    s, y = _flatten(scores, labels, mask)
    pos, neg = _counts(y)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each group of equal scores
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos], np.r_[np.inf, s[last]]


def auc(scores, labels, mask=None) -> float:
    """Exact, tie-aware area under the ROC curve via mid-ranks (Mann–Whitney U / (P·N))."""
    s, y = _flatten(scores, labels, mask)
    pos, neg = _counts(y)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    midrank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = midrank[inverse.ravel()][y].sum()
    return float((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg))


def pair_wins(per_subject_scores: Sequence, per_subject_labels: Sequence, masks: Sequence | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, P, N): W[a, b] = Σ over positives p of subject a and negatives q of subject b of [p > q] + ½[p = q];
    P, N: positives and negatives per subject. Pooled AUC of subjects drawn w times: wᵀWw / ((w·P)(w·N))."""
    flat = [_flatten(s, y, None if masks is None else masks[i])
            for i, (s, y) in enumerate(zip(per_subject_scores, per_subject_labels, strict=True))]
    n = len(flat)
    pos_scores = np.concatenate([s[y] for s, y in flat])
    owner = np.repeat(np.arange(n), [int(y.sum()) for _, y in flat])
    wins = np.zeros((n, n))
    for b, (s, y) in enumerate(flat):
        neg_sorted = np.sort(s[~y])
        below = np.searchsorted(neg_sorted, pos_scores, side="left")
        tied = np.searchsorted(neg_sorted, pos_scores, side="right") - below
        wins[:, b] = np.bincount(owner, weights=below + 0.5 * tied, minlength=n)
    pos = np.array([y.sum() for _, y in flat], np.float64)
    neg = np.array([y.size - y.sum() for _, y in flat], np.float64)
    return wins, pos, neg


def bootstrap_auc(per_subject_scores: Sequence, per_subject_labels: Sequence, n_boot: int = 1000, seed: int = 0,
                  masks: Sequence | None = None) -> dict[str, float]:
    """Pooled AUC with a subject-level bootstrap: subjects resampled with replacement, their voxels pooled.

    Returns auc (all subjects once), mean, std, p2_5, p97_5 over the resamples, and n_valid (resamples with both
    classes; the others, e.g. only lesion-free subjects drawn, are skipped)."""
    wins, pos, neg = pair_wins(per_subject_scores, per_subject_labels, masks)
    if pos.sum() == 0 or neg.sum() == 0:
        raise ValueError("bootstrap AUC needs positive and negative voxels")
    n = len(pos)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    pairs = (weights @ pos) * (weights @ neg)
    valid = pairs > 0
    values = np.einsum("ri,ij,rj->r", weights[valid], wins, weights[valid]) / pairs[valid]
    full = float(wins.sum() / (pos.sum() * neg.sum()))
    if values.size == 0:
        return {"auc": full, "mean": float("nan"), "std": float("nan"), "p2_5": float("nan"),
                "p97_5": float("nan"), "n_valid": 0}
    return {"auc": full, "mean": float(values.mean()), "std": float(values.std()),
            "p2_5": float(np.percentile(values, 2.5)), "p97_5": float(np.percentile(values, 97.5)),
            "n_valid": int(values.size)}
