"""Uncertainty maps and the metrics of the uncertainty benchmark (Czolbe et al. IPMI 2021, Sec. 4.3-4.4).

Arrays may be numpy arrays or torch tensors; maps come back in the type they came in, metrics as floats.
Conventions: entropy in bits (log base 2), so a binary task's maximum is 1 and C classes' is log2(C); the
distance between two segmentations is d = 1 − IoU, with the IoU of two empty masks = 1 (d = 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..bench.roc import auc


def _tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _like(result: torch.Tensor, original: Any):
    return result if isinstance(original, torch.Tensor) else result.cpu().numpy()


def entropy(p, dim: int = 1):
    """Pixel-wise entropy −Σ_c p_c log2 p_c in bits along the class axis `dim` (0·log 0 = 0)."""
    t = _tensor(p)
    t = t.float() if not t.is_floating_point() else t
    h = -torch.special.xlogy(t, t).sum(dim) / math.log(2.0)
    return _like(h.clamp_min(0.0), p)


def predictive_mean(samples):
    """Mean probabilities over the sample axis 0: (n, B, C, *S) → (B, C, *S)."""
    t = _tensor(samples)
    return _like(t.float().mean(0) if not t.is_floating_point() else t.mean(0), samples)


def sampled_masks(samples, dim: int = 2):
    """Label map of each sample: argmax over the class axis (2 for (n, B, C, *S)) → (n, B, *S) int64."""
    return _like(_tensor(samples).argmax(dim), samples)


def dice_per_class(pred, target, n_classes: int | None = None) -> dict[int, float]:
    """Dice of every class 0..C−1 between two label maps; 1.0 for a class absent from both."""
    p, t = _tensor(pred).long().flatten(), _tensor(target).long().flatten()
    if p.shape != t.shape:
        raise ValueError(f"prediction ({p.numel()} voxels) and target ({t.numel()}) differ in size")
    n = int(n_classes if n_classes is not None else max(int(p.max()), int(t.max())) + 1)
    inter = torch.bincount(t[p == t], minlength=n)[:n].double()
    sizes = (torch.bincount(p, minlength=n)[:n] + torch.bincount(t, minlength=n)[:n]).double()
    dice = torch.where(sizes > 0, 2 * inter / sizes.clamp_min(1), torch.ones_like(sizes))
    return {c: float(dice[c]) for c in range(n)}


def _errors(entropy_map, pred, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h = np.asarray(_tensor(entropy_map).detach().cpu(), np.float64)
    wrong = np.asarray(_tensor(pred).cpu()) != np.asarray(_tensor(target).cpu())
    if h.shape != wrong.shape:
        raise ValueError(f"entropy {h.shape} and labels {wrong.shape} differ in shape")
    m = None if mask is None else np.asarray(_tensor(mask).cpu()).reshape(h.shape).astype(bool)
    return h, wrong, m


def error_detection_auroc(entropy_map, pred, target, mask=None) -> float:
    """AUROC of the entropy as a detector of misclassified voxels (inside `mask`); NaN when no voxel (or every
    voxel) is wrong, where error detection is undefined."""
    h, wrong, m = _errors(entropy_map, pred, target, mask)
    w = wrong if m is None else wrong[m]
    if w.size == 0 or w.all() or not w.any():
        return float("nan")
    return auc(h, wrong, m)


def mean_entropy_correct_wrong(entropy_map, pred, target, mask=None) -> dict[str, float]:
    """Mean entropy (bits) on correctly and on wrongly labelled voxels (NaN for an empty group)."""
    h, wrong, m = _errors(entropy_map, pred, target, mask)
    keep = np.ones_like(wrong) if m is None else m
    out = {}
    for name, group in (("correct", keep & ~wrong), ("wrong", keep & wrong)):
        out[name] = float(h[group].mean()) if group.any() else float("nan")
    return out


def expected_calibration_error(probs, target, bins: int = 15, *, dim: int = 1, mask=None) -> float:
    """Top-label ECE: Σ_bins (n_b / N)·|accuracy_b − mean confidence_b| over equal-width confidence bins.

    `probs` has the class axis at `dim` ((B, C, *S) by default; −1 for a Volume's channel-last data), `target` the
    same shape without it."""
    p = _tensor(probs).double()
    conf, pred = p.max(dim)
    t = _tensor(target).to(pred.device)
    if t.shape != pred.shape:
        raise ValueError(f"target {tuple(t.shape)} does not match the probabilities without their class axis "
                         f"{tuple(pred.shape)}")
    correct = (pred == t).double()
    if mask is not None:
        keep = _tensor(mask).reshape(conf.shape).bool().to(conf.device)
        conf, correct = conf[keep], correct[keep]
    conf, correct = conf.flatten(), correct.flatten()
    if conf.numel() == 0:
        return float("nan")
    idx = torch.clamp((conf * bins).long(), max=bins - 1)  # bin b holds [b/bins, (b+1)/bins); 1.0 in the last
    gap = torch.bincount(idx, weights=correct, minlength=bins) - torch.bincount(idx, weights=conf, minlength=bins)
    return float(gap.abs().sum() / conf.numel())


def _flat_masks(samples, n_classes: int | None) -> torch.Tensor:
    """(n, K, V) bool: K = 1 foreground (label ≠ 0) when n_classes is None, else one mask per class 1..C−1."""
    s = _tensor(samples)
    s = s.reshape(s.shape[0], -1)
    if n_classes is None:
        return (s != 0)[:, None]
    return torch.stack([s == c for c in range(1, n_classes)], dim=1)


def pairwise_distances(samples_a, samples_b, n_classes: int | None = None) -> torch.Tensor:
    """d = 1 − IoU between every sample of a (n, *S) and of b (m, *S): (n, m). Binary (label ≠ 0) by default;
    with n_classes, the mean over the foreground classes of per-class 1 − IoU (Kohl et al.)."""
    a, b = _flat_masks(samples_a, n_classes).float(), _flat_masks(samples_b, n_classes).float()
    if a.shape[1:] != b.shape[1:]:
        raise ValueError("the two sets of samples must have the same grid")
    inter = torch.einsum("akv,bkv->abk", a, b)
    union = a.sum(-1)[:, None] + b.sum(-1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return (1.0 - iou).mean(-1)


def generalised_energy_distance(samples_a, samples_b, n_classes: int | None = None) -> float:
    """D²_GED = 2 E[d(a, b)] − E[d(a, a')] − E[d(b, b')] (paper Eq. 3) over all pairs, same-sample pairs included
    (sampling with replacement, as in the paper and Kohl et al.): exactly 0 for identical sample sets."""
    d_ab = pairwise_distances(samples_a, samples_b, n_classes).mean()
    d_aa = pairwise_distances(samples_a, samples_a, n_classes).mean()
    d_bb = pairwise_distances(samples_b, samples_b, n_classes).mean()
    return float(2 * d_ab - d_aa - d_bb)


def sample_diversity(samples, n_classes: int | None = None) -> float:
    """Mean d = 1 − IoU over pairs of distinct samples (0 for fewer than two)."""
    n = _tensor(samples).shape[0]
    if n < 2:
        return 0.0
    d = pairwise_distances(samples, samples, n_classes)
    return float(d.sum() / (n * (n - 1)))
