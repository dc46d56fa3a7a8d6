"""Learned registration with VoxelMorph-diff: affine (optimisation engine) → model grid → network → native grid.

The network's mean velocity (T_int scaling-and-squaring steps, optionally refined by instance optimisation under
the training loss) gives u on the model grid and its inverse exp(−v); `grid_registration` maps both back to the
native grids. Extra output `uncertainty`: the posterior velocity variance Σ_c Σ_c in mm² on the fixed grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import Volume
from ..progress import Progress
from ..registration import RegistrationSettings
from ..registration.device import resolve_device
from ..transforms.sampling import warp
from .grid_registration import GridField, LearnedRegistrationResult, load_method_model, register_on_model_grid
from .grid_registration import prealign as run_prealign
from .losses import GaussianImageTerm, laplacian_quadratic

__all__ = ["LearnedRegistrationResult", "learned_register"]


def _refine(model, velocity: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor, iterations: int,
            card: dict[str, Any], int_steps: int) -> torch.Tensor:
    """Instance optimisation of the mean velocity under the training loss (image term + Laplacian prior)."""
    cfg = card.get("training", {}).get("config", {})
    image, lam = GaussianImageTerm(cfg.get("sigma2", 0.02)), float(cfg.get("lam", 20.0))
    v = velocity.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=0.05)
    n_full = fixed[0, 0].numel()
    for _ in range(iterations):
        with torch.enable_grad():
            disp = model.integrate(v, fixed.shape[2:], int_steps)
            loss = image(warp(moving, disp), fixed) + 0.5 * lam * laplacian_quadratic(v) / n_full
            opt.zero_grad()
            loss.backward()
            opt.step()
    return v.detach()


def learned_register(fixed: Volume, moving: Volume, model: torch.nn.Module | str | Path, *,
                     refine_iterations: int = 0, int_steps: int | None = None,
                     affine_settings: RegistrationSettings | None = None, fixed_mask: Volume | None = None,
                     moving_mask: Volume | None = None, prealign: str = "affine",
                     initial_transform: np.ndarray | None = None, card: dict[str, Any] | None = None,
                     progress: Progress | None = None, device: str | torch.device = "auto"
                     ) -> LearnedRegistrationResult:
    """Register `moving` onto `fixed` with a VoxelMorph-diff model (module, or weights path with its card).

    `prealign`: 'affine' (the engine, from `initial_transform` when given; the model's training domain) or
    'none' (`initial_transform` or identity)."""
    progress = progress or Progress()
    start = time.perf_counter()
    dev = resolve_device(device)
    model, card = load_method_model(model, card, fixed.spatial_ndim, dev)
    settings = affine_settings or RegistrationSettings()
    transform, messages = run_prealign(fixed, moving, prealign, settings, initial=initial_transform,
                                       fixed_mask=fixed_mask, moving_mask=moving_mask,
                                       progress=progress.sub("affine", 0.0, 0.6), device=dev)
    steps = int_steps or model.int_steps

    def network(m_net: torch.Tensor, f_net: torch.Tensor, grid: Volume, _progress: Progress) -> GridField:
        _progress.update("network", 0.0, "learned deformable registration")
        with torch.no_grad():
            out = model(m_net, f_net, sample=False, int_steps=steps)
            velocity = out.velocity_mean
            if refine_iterations > 0:
                velocity = _refine(model, velocity, m_net, f_net, refine_iterations, card, steps)
            disp = model.integrate(velocity, grid.grid_shape, steps)
            inv = model.integrate(-velocity, grid.grid_shape, steps)
            var_mm2 = out.uncertainty() * float(np.mean(grid.spacing[:fixed.spatial_ndim]) ** 2)
        return GridField(disp, inv, maps={"uncertainty": var_mm2}, map_units={"uncertainty": "mm2"},
                         settings={"prealign": prealign, "int_steps": steps, "refine_iterations": refine_iterations,
                                   "affine_settings": {k: v for k, v in vars(settings).items() if k != "extra"}})

    return register_on_model_grid(fixed, moving, card, network, name="learned", transform_ras=transform,
                                  similarity=settings.similarity, ncc_window=settings.ncc_window,
                                  fixed_mask=fixed_mask, moving_mask=moving_mask, messages=messages,
                                  progress=progress.sub("learned", 0.6, 1.0), device=dev, start=start)
