"""CARL at inference: (optional pre-alignment) → model grid → φ_AB and φ_BA → native fixed grid.

CARL's first step is equivariant to translations, so by default nothing pre-aligns the pair: the moving image is
sampled onto the model grid in its own physical position (`prealign="none"`, or a given initial transform).
`prealign="affine"` runs the optimisation engine's affine first, as the other learned methods do.

Outputs beyond the common ones: the inverse from the swapped pass φ_BA (seed B.9.11), and
`inverse_consistency` (mm, fixed grid): |φ_BA(φ_AB(x)) − x| = |u_AB(x) + u_BA(x + u_AB(x))|, each axis's voxels
converted to mm by the model grid's spacing on that axis, the diagnostic the paper's evaluation logs. `refine=N`
is the paper's instance optimisation: N Adam steps on a copy of the network's weights for this pair under the
training loss (symmetric LNCC + λ·GradICON); the bundled weights are never changed.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..io import Volume
from ..models.grid_registration import GridField, LearnedRegistrationResult, prealign as run_prealign
from ..models.grid_registration import load_method_model, register_on_model_grid
from ..progress import Progress
from ..registration import RegistrationSettings
from ..registration.device import resolve_device
from ..transforms.sampling import warp
from .losses import gradicon, symmetric_lncc
from .model import CARL

REFINE_LR = 1e-4


def inverse_consistency(phi_ab: torch.Tensor, phi_ba: torch.Tensor, spacing=None) -> torch.Tensor:
    """(B, 1, *S) |u_AB(x) + u_BA(x + u_AB(x))|: how far φ_BA∘φ_AB is from the identity at x. In voxels, or in
    mm when `spacing` (the grid's voxel size per axis) is given: each component is scaled before the norm, so an
    anisotropic grid is measured correctly."""
    gap = phi_ab + warp(phi_ba, phi_ab, padding="border")
    if spacing is not None:
        gap = gap * torch.as_tensor(np.asarray(spacing, float), dtype=gap.dtype, device=gap.device).view(
            1, -1, *[1] * (gap.dim() - 2))
    return gap.norm(dim=1, keepdim=True)


def instance_optimise(model: CARL, moving: torch.Tensor, fixed: torch.Tensor, steps: int, *, depth: int,
                      lam: float, sigma: float, delta: float = 0.1, lr: float = REFINE_LR,
                      progress: Progress | None = None) -> CARL:
    """A copy of `model` fine-tuned on this pair for `steps` Adam steps (seed B.4 'IO'); `model` is unchanged."""
    tuned = copy.deepcopy(model).train()
    for module in tuned.modules():  # batch statistics of one pair are noise: keep the trained ones
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        with torch.enable_grad():
            phi_ab, phi_ba = tuned.forward_pair(moving, fixed, depth=depth)
            loss = symmetric_lncc(moving, fixed, phi_ab, phi_ba, sigma) + lam * gradicon(
                phi_ab, phi_ba, delta=delta, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress.update("refine", (step + 1) / steps, f"instance optimisation {step + 1}/{steps}")
    return tuned.eval()


def carl_register(fixed: Volume, moving: Volume, model: torch.nn.Module | str | Path, *, prealign: str = "none",
                  depth: int = 3, refine: int = 0, affine_settings: RegistrationSettings | None = None,
                  fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
                  initial_transform: np.ndarray | None = None, card: dict[str, Any] | None = None,
                  progress: Progress | None = None, device: str | torch.device = "auto") -> LearnedRegistrationResult:
    """Register `moving` onto `fixed` with a CARL model (module, or weights path with its card)."""
    progress = progress or Progress()
    start = time.perf_counter()
    dev = resolve_device(device)
    if refine < 0:
        raise InputError("refine must be >= 0 steps")
    model, card = load_method_model(model, card, fixed.spatial_ndim, dev, CARL, "carl")
    settings = affine_settings or RegistrationSettings()
    transform, messages = run_prealign(fixed, moving, prealign, settings, initial=initial_transform,
                                       fixed_mask=fixed_mask, moving_mask=moving_mask,
                                       progress=progress.sub("affine", 0.0, 0.3), device=dev)
    cfg = card.get("training", {}).get("config", {})

    def network(m_net: torch.Tensor, f_net: torch.Tensor, grid: Volume, step_progress: Progress) -> GridField:
        net = model
        if refine > 0:
            net = instance_optimise(model, m_net, f_net, refine, depth=depth, lam=float(cfg.get("lam", 1.5)),
                                    sigma=float(cfg.get("lncc_sigma", 4.0)), delta=float(cfg.get("gradicon_delta", 0.1)),
                                    progress=step_progress.sub("refine", 0, 0.9))
        step_progress.update("network", 0.9, "CARL forward and inverse passes")
        with torch.no_grad():
            phi_ab, phi_ba = net.forward_pair(m_net, f_net, depth=depth)
            icon_mm = inverse_consistency(phi_ab, phi_ba, grid.spacing[:fixed.spatial_ndim])
        return GridField(phi_ab, phi_ba, maps={"inverse_consistency": icon_mm}, map_units={"inverse_consistency": "mm"},
                         settings={"prealign": prealign, "depth": depth, "refine_steps": refine,
                                   "refine_lr": REFINE_LR if refine else None})

    return register_on_model_grid(fixed, moving, card, network, name="carl", transform_ras=transform,
                                  similarity=settings.similarity, ncc_window=settings.ncc_window,
                                  fixed_mask=fixed_mask, moving_mask=moving_mask, messages=messages,
                                  progress=progress.sub("carl", 0.3, 1.0), device=dev, start=start)
