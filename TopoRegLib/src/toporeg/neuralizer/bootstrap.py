"""Context-set bootstrapping (paper Sec. 3.5): a small context set is padded to the size the model works best at by
resampling its members with replacement; the copies get a small random affine so they add variety, not weight."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jitter_grids(n: int, size: tuple[int, int], generator: torch.Generator, rotation_deg: float, shift_px: float,
                  scale: float, device: torch.device) -> torch.Tensor:
    """(n, H, W, 2) sampling grids of random small similarity transforms about the slice centre."""
    u = torch.rand(n, 4, generator=generator, device=generator.device).to(device) * 2 - 1
    angle = u[:, 0] * math.radians(rotation_deg)
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    h, w = size
    # normalised coordinates: a shift of 1 px is 2/(W-1) along x and 2/(H-1) along y
    tx, ty = u[:, 2] * shift_px * 2 / max(w - 1, 1), u[:, 3] * shift_px * 2 / max(h - 1, 1)
    theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1), torch.stack([sin * w / h, cos, ty], 1)], 1)
    return F.affine_grid(theta, [n, 1, h, w], align_corners=True)


def bootstrap_context(context_in: torch.Tensor, context_out: torch.Tensor, size: int, *,
                      generator: torch.Generator, rotation_deg: float = 3.0, shift_px: float = 2.0,
                      scale: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (B, N, C, H, W) context tensors to N = `size`. The first N members are kept unchanged; each padded
    member is a random original (with replacement) under its own jitter, the same for its input and output.
    N ≥ size returns the inputs unchanged."""
    b, n = context_in.shape[:2]
    if n >= size:
        return context_in, context_out
    extra = size - n
    pick = torch.randint(0, n, (b, extra), generator=generator, device=generator.device).to(context_in.device)
    rows = torch.arange(b, device=context_in.device)[:, None]
    c_in = context_in.shape[2]
    picked = torch.cat([context_in[rows, pick], context_out[rows, pick]], dim=2).flatten(0, 1)
    grids = jitter_grids(b * extra, tuple(context_in.shape[-2:]), generator, rotation_deg, shift_px, scale,
                          context_in.device)
    moved = F.grid_sample(picked, grids, mode="bilinear", padding_mode="border", align_corners=True)
    moved = moved.unflatten(0, (b, extra))
    return (torch.cat([context_in, moved[:, :, :c_in]], dim=1),
            torch.cat([context_out, moved[:, :, c_in:]], dim=1))
