"""Pooled evaluation of sampled segmentations: one definition for training validation and the benchmark.

Voxels scored for error detection and calibration: the target's and the prediction's foreground, dilated by
`radius` voxels. Every wrong voxel is in it (a false positive anywhere puts itself in), and the correct voxels
are the neighbourhood where a mistake was possible, not the empty air around the head, which would make any
uncertainty map look excellent. On the ambiguous task the reference for error detection is the annotators'
unanimous label, and voxels where they disagree are left out (as the paper does for LIDC); GED and sample
diversity (d = 1 − IoU) are computed per image (axial slice for 2D and 3D alike, so that 2D models, whose
samples are drawn slice by slice, are compared fairly) on images where any annotator marks the structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .uncertainty import (dice_per_class, entropy, error_detection_auroc, expected_calibration_error,
                          generalised_energy_distance, mean_entropy_correct_wrong, predictive_mean,
                          sample_diversity, sampled_masks)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Box dilation of a (B, *S) bool mask in its own dimensionality (2D or 3D), one axis at a time (separable:
    a 9³ max pool over a head volume is 20× slower)."""
    if radius <= 0:
        return mask
    nd = mask.dim() - 1
    pool = F.max_pool2d if nd == 2 else F.max_pool3d
    x = mask[:, None].float()
    for axis in range(nd):
        kernel, pad = [1] * nd, [0] * nd
        kernel[axis], pad[axis] = 2 * radius + 1, radius
        x = pool(x, tuple(kernel), stride=1, padding=tuple(pad))
    return x[:, 0] > 0


def evaluation_region(target: torch.Tensor, pred: torch.Tensor, radius: int = 4) -> torch.Tensor:
    return dilate((target > 0) | (pred > 0), radius)


def majority(annotators: torch.Tensor) -> torch.Tensor:
    """(B, *S) label that at least half of the annotators (B, K, *S) gave (binary tasks)."""
    return (annotators.float().mean(1) >= 0.5).long()


def unanimous(annotators: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(label (B, *S), agree (B, *S) bool) of annotator masks (B, K, *S)."""
    first = annotators[:, :1]
    agree = (annotators == first).all(1)
    return first[:, 0], agree


def _axial_images(x: torch.Tensor) -> torch.Tensor:
    """(n, B, *S) → (B·K, n, X, Y) axial slices of 3D samples; 2D input (n, B, X, Y) → (B, n, X, Y)."""
    if x.dim() == 4:
        return x.transpose(0, 1)
    n, b, sx, sy, sz = x.shape
    return x.permute(1, 4, 0, 2, 3).reshape(b * sz, n, sx, sy)


@dataclass
class ScoreAccumulator:
    """Collects (sample probabilities, target[, annotators]) batch by batch; `summary()` gives the metrics."""

    n_classes: int
    radius: int = 4
    bins: int = 15
    preds: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    entropies: list = field(default_factory=list)
    regions: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    nll: list = field(default_factory=list)
    ged: list = field(default_factory=list)
    diversity: list = field(default_factory=list)
    labels: list = field(default_factory=list)     # (prediction, target) of every voxel, uint8, for Dice

    def add(self, samples: torch.Tensor, target: torch.Tensor, annotators: torch.Tensor | None = None,
            masks: torch.Tensor | None = None) -> None:
        """`samples` (n, B, C, *S) softmax probabilities (or their mean as n = 1 when `masks`, the n sampled
        label maps (n, B, *S), are given separately); `target` (B, *S) (ambiguous: the annotators' majority);
        `annotators` (B, K, *S) on the ambiguous task."""
        mean = predictive_mean(samples).float()
        pred = mean.argmax(1)
        masks = sampled_masks(samples) if masks is None else masks
        h = entropy(mean)
        truth, keep = (target, torch.ones_like(target, dtype=torch.bool)) if annotators is None else unanimous(
            annotators)
        region = evaluation_region(truth, pred, self.radius) & keep
        p_true = mean.gather(1, target[:, None].long()).clamp_min(1e-7)
        self.nll.append(float(-p_true.log().mean()))
        self.preds.append(pred[region].cpu())
        self.targets.append(truth[region].cpu())
        self.entropies.append(h[region].cpu())
        self.probs.append(mean.movedim(1, -1)[region].cpu())
        self.regions.append(int(region.sum()))
        self.labels.append((pred.flatten().to(torch.uint8).cpu(), target.flatten().to(torch.uint8).cpu()))
        if annotators is not None:
            model_imgs, ann_imgs = _axial_images(masks), _axial_images(annotators.movedim(1, 0))
            for m, a in zip(model_imgs, ann_imgs):
                if a.any():
                    self.ged.append(generalised_energy_distance(m, a))
                    self.diversity.append(sample_diversity(m))

    @classmethod
    def merged(cls, parts: list["ScoreAccumulator"]) -> "ScoreAccumulator":
        """One accumulator holding everything the parts collected (e.g. all appearances together)."""
        out = cls(parts[0].n_classes, parts[0].radius, parts[0].bins)
        for name in ("preds", "targets", "entropies", "regions", "probs", "nll", "ged", "diversity", "labels"):
            setattr(out, name, [v for p in parts for v in getattr(p, name)])
        return out

    def summary(self, names: dict[int, str] | None = None) -> dict[str, float]:
        names = names or {c: str(c) for c in range(self.n_classes)}
        pred = torch.cat([p for p, _ in self.labels])
        target = torch.cat([t for _, t in self.labels])
        dice = dice_per_class(pred, target, self.n_classes)
        out: dict[str, float] = {f"dice_{names[c]}": dice[c] for c in range(1, self.n_classes)}
        out["dice"] = float(np.mean([dice[c] for c in range(1, self.n_classes)]))
        h, p, t = torch.cat(self.entropies), torch.cat(self.preds), torch.cat(self.targets)
        out["auroc"] = error_detection_auroc(h, p, t) if h.numel() else float("nan")
        ent = mean_entropy_correct_wrong(h, p, t) if h.numel() else {"correct": float("nan"), "wrong": float("nan")}
        out["entropy_correct"], out["entropy_wrong"] = ent["correct"], ent["wrong"]
        out["error_rate"] = float((p != t).float().mean()) if p.numel() else float("nan")
        probs = torch.cat(self.probs)
        out["ece"] = expected_calibration_error(probs, t, self.bins, dim=-1) if probs.numel() else float("nan")
        out["nll"] = float(np.mean(self.nll))
        if self.ged:
            out["ged"] = float(np.mean(self.ged))
            out["diversity"] = float(np.mean(self.diversity))
            out["ged_images"] = float(len(self.ged))
        return out
