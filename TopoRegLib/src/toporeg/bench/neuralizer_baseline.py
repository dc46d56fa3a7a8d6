"""The paper's baseline for `toporeg bench neuralizer`: a task-specific U-Net trained from scratch on exactly the
examples Neuralizer gets as its context set, with the same loss and small random affine augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..neuralizer.bootstrap import jitter_grids
from ..neuralizer.losses import task_loss
from ..segmentation.backbone import ResidualUNet

BASELINE_CHANNELS = (16, 32, 64, 128)


def train_task_unet(context_in: torch.Tensor, context_out: torch.Tensor, is_segment: bool, *, steps: int,
                    seed: int, batch: int = 4, lr: float = 1e-3) -> ResidualUNet:
    """A U-Net trained for `steps` Adam steps on the (N, C, H, W) examples; each step draws `batch` of them with
    replacement under random jitter (rotation 5°, shift 3 px, scale 5 %). H and W must be multiples of 16."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, c_in = context_in.shape[:2]
    model = ResidualUNet(2, c_in, 1, BASELINE_CHANNELS)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    seg = torch.full((batch,), is_segment)
    pairs = torch.cat([context_in, context_out], dim=1)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, n, (batch,), generator=g)
        grids = jitter_grids(batch, tuple(pairs.shape[-2:]), g, 5.0, 3.0, 0.05, pairs.device)
        moved = F.grid_sample(pairs[pick], grids, mode="bilinear", padding_mode="border", align_corners=True)
        loss, _ = task_loss(model(moved[:, :c_in]), moved[:, c_in:], seg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: ResidualUNet, target_in: torch.Tensor) -> torch.Tensor:
    return model(target_in)
