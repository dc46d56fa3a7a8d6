"""Deformable stage on the fixed grid: SVF (diffeomorphic) or free-form displacement, coarse to fine.

The moving image is first resampled through the affine voxel map M at each level, so the field u
lives on the fixed grid and the total mapping is x ↦ M(x + u(x)). The optimised parameter is a field
at 1/`field_factor` of the level resolution, smoothed by a Gaussian before use (fluid-like
regularisation), plus an explicit diffusion or bending penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..filters import gaussian_smooth
from ..progress import Progress
from ..transforms.affine import affine_coordinates
from ..transforms.integration import integrate_svf
from ..transforms.sampling import resize_displacement, sample, warp
from .problem import Problem
from .device import threads_for_grid
from .optimise import combined_weight, minimise
from .pyramid import Level, make_level
from .regularizers import REGULARIZERS
from .settings import RegistrationSettings
from .similarity import Similarity


@dataclass
class DeformableField:
    """The optimised field on its control grid; `velocity` is an SVF or a displacement (voxels)."""
    velocity: torch.Tensor
    is_svf: bool
    steps: int

    def displacement(self, shape: tuple[int, ...]) -> torch.Tensor:
        u = integrate_svf(self.velocity, self.steps) if self.is_svf else self.velocity
        return resize_displacement(u, shape)

    def inverse_displacement(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        if not self.is_svf:
            return None
        return resize_displacement(integrate_svf(-self.velocity, self.steps), shape)


def optimise_deformable(problem: Problem, voxel_map: torch.Tensor, settings: RegistrationSettings,
                        similarity: Similarity, progress: Progress) -> DeformableField:
    total = sum(settings.iterations)
    done = 0
    param: torch.Tensor | None = None
    for index, (factor, iterations) in enumerate(zip(settings.levels, settings.iterations)):
        level = make_level(problem.fixed.grid_shape, factor)
        with threads_for_grid(int(np.prod(level.shape)), problem.device):
            param = _optimise_level(problem, voxel_map, settings, similarity, level, index, iterations, param,
                                    lambda i, loss, f=factor, n=iterations: progress.update(
                                        "deformable", (done + i) / max(total, 1),
                                        f"level 1/{f} iteration {i}/{n}: loss {loss:.4f}"))
        done += iterations
    with torch.no_grad():
        velocity = gaussian_smooth(param.detach(), settings.field_sigma)
    return DeformableField(velocity, settings.transform == "svf", settings.svf_steps)


def _optimise_level(problem: Problem, voxel_map: torch.Tensor, settings: RegistrationSettings,
                    similarity: Similarity, level: Level, index: int, iterations: int,
                    param: torch.Tensor | None, report) -> torch.Tensor:
    """Adam on the (smoothed) field parameter of one pyramid level; returns the parameter."""
    is_svf = settings.transform == "svf"
    regularizer = REGULARIZERS[settings.regularizer]
    ctrl_shape = tuple(max(n // settings.field_factor, 4) if settings.field_factor > 1 else n for n in level.shape)
    fixed_l, weight_l = problem.fixed_on(level)
    m_level = voxel_map @ torch.as_tensor(level.to_fixed_voxels(), dtype=torch.float64, device=problem.device)
    coords = affine_coordinates(m_level.float(), level.shape, device=problem.device)
    with torch.no_grad():
        moving_l = sample(problem.moving_for(level), coords)
        mmask_l = None if problem.moving_mask is None else sample(problem.moving_mask, coords)
    if param is None:
        param = torch.zeros(1, problem.ndim, *ctrl_shape, device=problem.device)
    else:
        param = resize_displacement(gaussian_smooth(param, settings.field_sigma), ctrl_shape)
    param = param.detach().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=settings.learning_rate * settings.level_lr_decay**index)

    def loss() -> torch.Tensor:
        velocity = gaussian_smooth(param, settings.field_sigma)
        u = DeformableField(velocity, is_svf, settings.svf_steps).displacement(level.shape)
        mm = None if mmask_l is None else warp(mmask_l, u)
        return (similarity(warp(moving_l, u), fixed_l, combined_weight(weight_l, mm))
                + settings.regularization * regularizer(velocity))

    minimise(loss, optimiser, iterations, settings, report)
    return param
