"""Rigid → affine optimisation in a physical (isotropic mm) frame of the fixed grid.

The optimised map is y ↦ L(y − c) + c + t in the fixed image's mm frame (y = spacing ⊙ voxel), with
L = R(angles)(I + G); the voxel map to the moving grid is M = B · S⁻¹ · T · S, where B is the initial
transform's voxel map. Working in the fixed frame keeps 2D and 3D (and oblique grids) identical.
"""

from __future__ import annotations

import numpy as np
import torch

from ..progress import Progress
from ..transforms.affine import affine_coordinates
from ..transforms.sampling import sample
from .problem import Problem
from .device import threads_for_grid
from .optimise import combined_weight, minimise
from .pyramid import Level, make_level
from .settings import RegistrationSettings
from .similarity import Similarity


def rotation(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    if ndim == 2:
        c, s = torch.cos(angles[0]), torch.sin(angles[0])
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    mats = []
    for axis in range(3):
        c, s = torch.cos(angles[axis]), torch.sin(angles[axis])
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        i, j = [a for a in range(3) if a != axis]
        rows = [[one if r == q else zero for q in range(3)] for r in range(3)]
        rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
        mats.append(torch.stack([torch.stack(r) for r in rows]))
    return mats[2] @ mats[1] @ mats[0]


def homogeneous(linear: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    ndim = linear.shape[0]
    top = torch.cat([linear, translation.view(ndim, 1)], dim=1)
    bottom = torch.zeros(1, ndim + 1, dtype=linear.dtype, device=linear.device)
    bottom[0, ndim] = 1
    return torch.cat([top, bottom], dim=0)


def center_of_mass(image: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Intensity-weighted centroid in voxel coordinates (float64)."""
    w = image[0, 0].double().clamp_min(0)
    if weight is not None:
        w = w * weight[0, 0].double()
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=w.device) for n in w.shape], indexing="ij")
    total = w.sum().clamp_min(1e-12)
    return torch.stack([(g * w).sum() / total for g in grids])


class AffineModel(torch.nn.Module):
    """Parameters of the frame-space affine and the voxel map M they induce."""

    def __init__(self, problem: Problem, center_mm: torch.Tensor, translation_mm: torch.Tensor):
        super().__init__()
        n = problem.ndim
        dev = problem.device
        self.ndim = n
        self.register_buffer("base", problem.base)
        self.register_buffer("frame", problem.frame)
        self.register_buffer("center", center_mm)
        self.angles = torch.nn.Parameter(torch.zeros(1 if n == 2 else 3, dtype=torch.float64, device=dev))
        self.translation = torch.nn.Parameter(translation_mm.clone())
        self.shear_scale = torch.nn.Parameter(torch.zeros(n, n, dtype=torch.float64, device=dev))

    def frame_matrix(self) -> torch.Tensor:
        n = self.ndim
        eye = torch.eye(n, dtype=torch.float64, device=self.base.device)
        linear = rotation(self.angles, n) @ (eye + self.shear_scale)
        return homogeneous(linear, self.center + self.translation - linear @ self.center)

    def voxel_map(self) -> torch.Tensor:
        """(ndim+1)² fixed voxel → moving voxel."""
        s = homogeneous(torch.diag(self.frame), torch.zeros_like(self.frame))
        s_inv = homogeneous(torch.diag(1.0 / self.frame), torch.zeros_like(self.frame))
        return self.base @ s_inv @ self.frame_matrix() @ s


def initial_model(problem: Problem, settings: RegistrationSettings) -> AffineModel:
    """Centre-of-mass initialisation: the fixed centroid maps onto the moving centroid."""
    c_f = center_of_mass(problem.fixed_image, problem.fixed_weight)
    center = c_f * problem.frame
    translation = torch.zeros_like(center)
    if settings.initial_alignment == "com":
        c_m = center_of_mass(problem.moving_image, problem.moving_mask)
        target = torch.linalg.solve(problem.base, torch.cat([c_m, c_m.new_ones(1)]))[:-1]
        translation = target * problem.frame - center
    return AffineModel(problem, center, translation)


def optimise_affine(problem: Problem, settings: RegistrationSettings, similarity: Similarity,
                    progress: Progress) -> AffineModel:
    """Rigid pass at the coarsest level, then affine (unless rigid-only) over the pyramid."""
    model = initial_model(problem, settings)
    rigid_only = settings.transform == "rigid"
    passes = [(settings.affine_levels[0], settings.affine_iterations[0], True)]
    if not rigid_only:
        passes += list(zip(settings.affine_levels, settings.affine_iterations, [False] * len(settings.affine_levels)))
    else:
        passes += [(f, n, True) for f, n in zip(settings.affine_levels[1:], settings.affine_iterations[1:])]
    total = sum(n for _, n, _ in passes)
    done = 0
    for factor, iterations, rigid in passes:
        level = make_level(problem.fixed.grid_shape, factor)
        with threads_for_grid(int(np.prod(level.shape)), problem.device):
                _optimise_level(model, problem, settings, similarity, level, iterations, rigid,
                            lambda i, loss: progress.update("affine", (done + i) / max(total, 1),
                                                            f"{'rigid' if rigid else 'affine'} level 1/{factor}: "
                                                            f"loss {loss:.4f}"))
        done += iterations
    return model


def _optimise_level(model: AffineModel, problem: Problem, settings: RegistrationSettings, similarity: Similarity,
                    level: Level, iterations: int, rigid: bool, report) -> None:
    fixed_l, weight_l = problem.fixed_on(level)
    moving_blur = problem.moving_for(level)
    to_fixed = torch.as_tensor(level.to_fixed_voxels(), dtype=torch.float64, device=problem.device)
    lr = settings.affine_lr
    groups = [{"params": [model.angles], "lr": lr}, {"params": [model.translation], "lr": lr * 50.0}]
    if not rigid:
        groups.append({"params": [model.shear_scale], "lr": lr * 0.5})
    optimiser = torch.optim.Adam(groups)

    def loss() -> torch.Tensor:
        m = model.voxel_map() @ to_fixed
        coords = affine_coordinates(m.float(), level.shape, device=problem.device)
        mm = None if problem.moving_mask is None else sample(problem.moving_mask, coords)
        return similarity(sample(moving_blur, coords), fixed_l, combined_weight(weight_l, mm))

    minimise(loss, optimiser, iterations, settings, report)
