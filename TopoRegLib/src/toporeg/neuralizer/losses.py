"""The two Neuralizer losses (paper Sec. 3.2): soft Dice for mask tasks, MSE/(2σ²) for image tasks, per sample,
so one batch can mix tasks of both kinds.

One addition to the paper: mask tasks also get `SEG_ANCHOR` × the plain mean squared error between the raw output
and the 0/1 mask. It keeps the raw output in mask units (the head is shared with image tasks) and removes the soft-Dice
plateau where the sigmoid saturates on "everything foreground" (a tiny model stalls there on the toy task of
Testing/test_neuralizer_model.py without it and solves it with it)."""

from __future__ import annotations

import torch

from .model import segment_probability

SIGMA2 = 0.05  # the paper's balance between the Dice and MSE terms
SEG_ANCHOR = 0.1  # weight of the raw-output MSE added to the soft Dice of mask tasks


def soft_dice_loss(p: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 − soft Dice per sample, (B,)."""
    dims = tuple(range(1, p.dim()))
    inter = (p * target).sum(dims)
    return 1.0 - (2 * inter + eps) / (p.sum(dims) + target.sum(dims) + eps)


def mse_loss(y: torch.Tensor, target: torch.Tensor, sigma2: float = SIGMA2) -> torch.Tensor:
    """Per-sample mean squared error / (2σ²), (B,)."""
    return ((y - target) ** 2).flatten(1).mean(1) / (2 * sigma2)


def task_loss(y: torch.Tensor, target: torch.Tensor, is_segment: torch.Tensor, sigma2: float = SIGMA2
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over the batch of each sample's own loss; `terms` holds the detached per-kind means (NaN-free: a kind
    absent from the batch reports 0)."""
    seg = is_segment.to(device=y.device, dtype=torch.bool)
    seg_loss = soft_dice_loss(segment_probability(y), target) + SEG_ANCHOR * mse_loss(y, target, 0.5)
    per_sample = torch.where(seg, seg_loss, mse_loss(y, target, sigma2))
    n_seg, n_img = seg.sum().clamp(min=1), (~seg).sum().clamp(min=1)
    terms = {"dice_loss": (per_sample * seg).sum().detach() / n_seg,
             "mse_loss": (per_sample * ~seg).sum().detach() / n_img}
    return per_sample.mean(), terms
