"""DIO's outer (training) loss: image similarity + soft Dice of warped labels, averaged over all solver levels, the
coarse levels on downsampled images and soft (blurred one-hot) labels (A.4, A.9.7)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..filters import downsample
from ..registration.similarity import MSE, LocalNCC
from ..transforms.sampling import warp
from .fidelity import one_hot


def soft_dice_loss(warped: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 − mean soft Dice over the foreground channels present in `target` (each pooled over the batch)."""
    dims = (0,) + tuple(range(2, warped.dim()))
    inter = (warped * target).sum(dims)
    size = target.sum(dims)
    dice = (2 * inter + eps) / (warped.sum(dims) + size + eps)
    present = size > 0.5
    if not bool(present.any()):
        return warped.new_zeros(())
    return 1.0 - dice[present].mean()


@dataclass
class LevelTargets:
    """Images and foreground one-hot labels of a batch at each solver level (factors coarse -> fine)."""

    fixed: list[torch.Tensor]
    moving: list[torch.Tensor]
    fixed_labels: list[torch.Tensor]
    moving_labels: list[torch.Tensor]

    @classmethod
    def build(cls, batch: dict[str, torch.Tensor], scales: list[int]) -> "LevelTargets":
        k = int(max(batch["fixed_labels"].max(), batch["moving_labels"].max())) + 1
        dtype = batch["fixed"].dtype
        onehots = {key: one_hot(batch[key], max(k, 2), dtype)[:, 1:] for key in ("fixed_labels", "moving_labels")}
        return cls(*([downsample(x, s) for s in scales] for x in (batch["fixed"], batch["moving"],
                                                                   onehots["fixed_labels"], onehots["moving_labels"])))


class OuterLoss:
    """image_weight · mean_levels(image term) + dice_weight · mean_levels(1 − soft Dice)."""

    def __init__(self, image_loss: str = "mse", image_weight: float = 1.0, dice_weight: float = 1.0,
                 ncc_window: int = 9):
        if image_loss not in ("mse", "ncc"):
            raise ValueError(f"image_loss must be 'mse' or 'ncc', got {image_loss!r}")
        self.image = MSE() if image_loss == "mse" else LocalNCC(ncc_window)
        self.image_weight, self.dice_weight = image_weight, dice_weight

    def __call__(self, displacements: list[torch.Tensor], targets: LevelTargets) -> dict[str, torch.Tensor]:
        image, dice = [], []
        for level, disp in enumerate(displacements):
            image.append(self.image(warp(targets.moving[level], disp), targets.fixed[level]))
            dice.append(soft_dice_loss(warp(targets.moving_labels[level], disp), targets.fixed_labels[level]))
        image_t, dice_t = torch.stack(image).mean(), torch.stack(dice).mean()
        total = self.image_weight * image_t + self.dice_weight * dice_t
        return {"total": total, "image": image_t, "dice_loss": dice_t}
