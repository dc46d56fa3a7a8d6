"""How Neuralizer outputs are scored (validation and benchmark alike): Dice of the 0.5-thresholded mask for mask
tasks, PSNR (peak 1: images are in [0, 1]) for image tasks."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch


def binary_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, t = pred.bool(), target.bool()
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def psnr(y: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at 100 dB for identical images)."""
    mse = float(((y.float() - target.float()) ** 2).mean())
    return 100.0 if mse <= 1e-10 else 10.0 * math.log10(peak ** 2 / mse)


def score(y: torch.Tensor, target: torch.Tensor, is_segment: bool) -> float:
    """One sample's score: Dice of y ≥ 0.5 against target ≥ 0.5, or PSNR of y clipped to [0, 1]."""
    if is_segment:
        return binary_dice(y >= 0.5, target >= 0.5)
    return psnr(y.clamp(0, 1), target)


class EpisodeScores:
    """Accumulates per-sample scores by task; `summary()` gives the means the validation log records."""

    FIELDS = ["loss", "dice", "psnr"]

    def __init__(self) -> None:
        self.by_task: dict[str, list[float]] = defaultdict(list)
        self.dice: list[float] = []
        self.psnr: list[float] = []
        self.losses: list[float] = []

    def add(self, y: torch.Tensor, target: torch.Tensor, is_segment: torch.Tensor, tasks: list[str],
            loss: float | None = None) -> None:
        for b, task in enumerate(tasks):
            seg = bool(is_segment[b])
            s = score(y[b], target[b], seg)
            (self.dice if seg else self.psnr).append(s)
            self.by_task[task].append(s)
        if loss is not None:
            self.losses.append(loss)

    def summary(self) -> dict[str, float]:
        def mean(v: list[float]) -> float:
            return float(np.mean(v)) if v else float("nan")
        return {"loss": mean(self.losses), "dice": mean(self.dice), "psnr": mean(self.psnr),
                **{f"{k}": mean(v) for k, v in sorted(self.by_task.items())}}
