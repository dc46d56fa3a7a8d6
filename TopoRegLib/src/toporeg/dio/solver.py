"""DIO's black-box multi-scale solver on feature maps, and the differentiable steps that train through its optimum.

`solve` registers moving features to fixed features coarse → fine (Jena et al., A.2.3): inner loss
mean((F_f − F_m∘φ)²) + optional prompt terms, Adam moments on the transform's gradient (Gaussian-smoothed for
dense fields), steps of at most `lr` voxels (`parametrization`), smoothing of the field, early stopping per level.
The features are never differentiated here: training uses `phantom_step` (Jacobian-free backprop, A.2.2) or, for
the few affine parameters, the exact implicit gradient (`phantom_step(..., exact=True)`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import CancelledError, InputError
from ..registration.settings import TRANSFORM_MODELS
from ..transforms.sampling import resize_displacement, warp
from . import parametrization as par
from .sampler import linear_warp

SOLVER_TRANSFORMS = ("displacement", "svf", "affine")
BETAS, ADAM_EPS = (0.9, 0.99), 1e-8
Term = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SolverSettings:
    """How the inner problem is solved; a model card's `solver` holds the training values (A.9.4: early stopping
    and iteration caps are part of the model, so inference defaults to them)."""

    transform: str = "displacement"
    iterations: tuple[int, ...] = (60, 40, 20)   # per scale, coarse -> fine (one entry per feature level)
    lr: float = 0.5                              # largest per-voxel step, in voxels of the level
    sigma_grad: float = 1.0                      # Gaussian σ (voxels) on the gradient (dense transforms)
    sigma_warp: float = 0.5                      # Gaussian σ (voxels) on the field after each step
    convergence_eps: float = 1e-3                # stop a level when the relative loss decrease stays below eps
    convergence_tol: int = 4                     # ... for this many consecutive iterations
    svf_steps: int = 7
    phantom_steps: int = 1
    newton_steps: int = 0                        # affine only: damped Newton polish on the finest level

    def __post_init__(self) -> None:
        object.__setattr__(self, "iterations", tuple(int(n) for n in self.iterations))
        if self.transform not in SOLVER_TRANSFORMS:
            known = [t for t in TRANSFORM_MODELS if t in SOLVER_TRANSFORMS]
            raise InputError(f"the DIO solver has no transform '{self.transform}' (choose from "
                             f"{', '.join(known)})")
        checks = [(len(self.iterations) > 0 and min(self.iterations) >= 1, "iterations must be >= 1 per level"),
                  (self.lr > 0, "lr must be > 0"),
                  (self.sigma_grad >= 0 and self.sigma_warp >= 0, "sigmas must be >= 0"),
                  (self.convergence_eps >= 0, "convergence_eps must be >= 0"),
                  (self.convergence_tol >= 1, "convergence_tol must be >= 1"),
                  (self.svf_steps >= 0, "svf_steps must be >= 0"),
                  (self.phantom_steps >= 1, "phantom_steps must be >= 1"),
                  (self.newton_steps >= 0, "newton_steps must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise InputError(f"DIO solver settings: {message}")

    def with_(self, **changes) -> "SolverSettings":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "iterations": list(self.iterations)}


@dataclass
class SolverResult:
    transform: str
    displacement: torch.Tensor        # (B, ndim, *S) on the finest level, its voxels; x_moving = x + u(x)
    inverse: torch.Tensor             # (B, ndim, *S) the inverse mapping's displacement
    params: list[torch.Tensor]        # converged parameters per level (detached)
    step_scales: list[torch.Tensor]   # final Adam denominators D + ε per level (the phantom step reuses them)
    losses: list[list[float]]         # inner loss per iteration, per level
    iterations: list[int]
    converged: list[bool]             # stopped early by the convergence test (not by the iteration cap)
    seconds: float
    matrix: torch.Tensor | None = None  # affine: (B, ndim+1, ndim+1) voxel matrix on the finest level
    shapes: list[tuple[int, ...]] = field(default_factory=list)


def _inner_loss(fixed: torch.Tensor, moving: torch.Tensor, disp: torch.Tensor, terms: Sequence[Term],
                full_shape: tuple[int, ...], twice: bool = False) -> torch.Tensor:
    warped = linear_warp(moving, disp, "border") if twice else warp(moving, disp, padding="border")
    loss = ((warped - fixed) ** 2).mean()
    for term in terms:
        loss = loss + term(resize_displacement(disp, full_shape))
    return loss


def _check(fixed_feats: Sequence[torch.Tensor], moving_feats: Sequence[torch.Tensor], settings: SolverSettings) -> None:
    if len(fixed_feats) != len(moving_feats) or len(fixed_feats) != len(settings.iterations):
        raise InputError(f"need one iteration budget per feature level: {len(fixed_feats)} fixed, "
                         f"{len(moving_feats)} moving levels, {len(settings.iterations)} budgets")
    for f, m in zip(fixed_feats, moving_feats):
        if f.shape[1:] != m.shape[1:]:
            raise InputError(f"fixed and moving features differ: {tuple(f.shape)} vs {tuple(m.shape)}")


def solve(fixed_feats: Sequence[torch.Tensor], moving_feats: Sequence[torch.Tensor], settings: SolverSettings, *,
          extra_terms: Sequence[Term] = (), initial: torch.Tensor | None = None,
          progress: Callable[[float, str], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> SolverResult:
    """Register moving to fixed features (lists coarse -> fine, (B, C, *S_l)); see the module docstring."""
    _check(fixed_feats, moving_feats, settings)
    t0, s, kind = time.perf_counter(), settings, settings.transform
    fixed_feats = [f.detach() for f in fixed_feats]
    moving_feats = [m.detach() for m in moving_feats]
    batch = max(fixed_feats[0].shape[0], moving_feats[0].shape[0])
    shapes = [tuple(f.shape[2:]) for f in fixed_feats]
    full = shapes[-1]
    # `initial`: a dense field at any resolution, or an affine voxel matrix of the finest grid
    params = par.initial(kind, batch, full if kind == "affine" else shapes[0], fixed_feats[0], initial)
    params = par.resize(kind, params, full, shapes[0]) if kind == "affine" else params
    out = SolverResult(kind, params, params, [], [], [], [], [], 0.0, shapes=shapes)
    total, done = sum(s.iterations), 0
    for level, (ff, fm, shape) in enumerate(zip(fixed_feats, moving_feats, shapes)):
        if level:
            params = par.resize(kind, params, shapes[level - 1], shape)
        m1, m2 = torch.zeros_like(params), torch.zeros_like(params)
        n_vox = float(torch.Size(shape).numel())
        curve, calm, stopped = [], 0, False
        for it in range(1, s.iterations[level] + 1):
            if should_stop is not None and should_stop():
                raise CancelledError("cancelled by user")
            with torch.enable_grad():
                p = params.detach().requires_grad_(True)
                loss = _inner_loss(ff, fm, par.displacement(kind, p, shape, s.svf_steps), extra_terms, full)
                grad, = torch.autograd.grad(loss * n_vox, p)
            with torch.no_grad():
                grad = par.smooth(kind, grad, s.sigma_grad)
                m1.mul_(BETAS[0]).add_(grad, alpha=1 - BETAS[0])
                m2.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
                denom = par.adam_denominator(kind, m2 / (1 - BETAS[1] ** it)) + ADAM_EPS
                step = par.normalised_step(kind, m1 / (1 - BETAS[0] ** it) / denom, shape, s.lr)
                params = par.smooth(kind, params - step, s.sigma_warp)
            curve.append(float(loss.detach()))
            done += 1
            if progress is not None:
                progress(done / total, f"level {level + 1}/{len(shapes)}, iteration {it}, loss {curve[-1]:.4g}")
            if len(curve) > 1:
                rel = (curve[-2] - curve[-1]) / max(abs(curve[-2]), 1e-12)
                calm = calm + 1 if 0.0 <= rel < s.convergence_eps else 0  # a rising loss is not calm
                if calm >= s.convergence_tol:
                    stopped = True
                    break
        done = sum(s.iterations[: level + 1])
        if kind == "affine" and level == len(shapes) - 1 and s.newton_steps:
            params = _newton_polish(ff, fm, params, shape, s.newton_steps, extra_terms)
        out.params.append(params.detach())
        out.step_scales.append(denom.detach())
        out.losses.append(curve)
        out.iterations.append(len(curve))
        out.converged.append(stopped)
    with torch.no_grad():
        out.displacement = par.displacement(kind, params, full, s.svf_steps)
        out.inverse = par.inverse(kind, params, full, s.svf_steps)
        if kind == "affine":
            out.matrix = par.homogeneous(par.affine_matrix(params, full))
    out.seconds = time.perf_counter() - t0
    return out


def _affine_loss(ff, fm, shape, terms, n_vox):
    def loss(flat: torch.Tensor) -> torch.Tensor:
        p = flat.view(ff.shape[0], len(shape), len(shape) + 1)
        return n_vox * _inner_loss(ff, fm, par.displacement("affine", p, shape, 0), terms, shape, twice=True)
    return loss


def _hessian(loss: Callable[[torch.Tensor], torch.Tensor], flat: torch.Tensor) -> torch.Tensor:
    h = torch.autograd.functional.hessian(loss, flat.detach())
    return 0.5 * (h + h.T)


def _newton_polish(ff, fm, params, shape, steps, terms):
    """Damped Newton on the few affine parameters: brings the solver to a true stationary point, where the
    implicit function theorem (and so `phantom_step(exact=True)`) holds."""
    loss = _affine_loss(ff, fm, shape, terms, float(torch.Size(shape).numel()))
    flat = params.detach().flatten()
    eye = torch.eye(flat.numel(), device=flat.device, dtype=flat.dtype)
    with torch.enable_grad():
        for _ in range(steps):
            x = flat.clone().requires_grad_(True)
            value = loss(x)
            grad, = torch.autograd.grad(value, x)
            hess = _hessian(loss, flat)
            damping = 1e-6 * float(hess.diagonal().abs().max())
            for _ in range(8):
                candidate = flat - torch.linalg.solve(hess + damping * eye, grad)
                if float(loss(candidate).detach()) <= float(value.detach()):
                    flat = candidate.detach()
                    break
                damping = max(damping * 10.0, 1e-8)
            else:
                break
    return flat.view_as(params)


def phantom_step(fixed_feats: Sequence[torch.Tensor], moving_feats: Sequence[torch.Tensor], result: SolverResult,
                 settings: SolverSettings, *, exact: bool = False) -> list[torch.Tensor]:
    """Differentiable displacements per level (coarse -> fine) from the converged parameters: `phantom_steps`
    more solver steps with `create_graph=True` (Jacobian-free backprop: gradients reach the features only through
    ∇L, with the solver's step normalisation held fixed). `exact=True` (affine): one Newton step p − H⁻¹∇L, the
    exact Hessian held fixed, whose derivative w.r.t. the features is the implicit-function-theorem gradient."""
    s, kind = settings, result.transform
    if exact and kind != "affine":
        raise InputError("the exact implicit gradient is available for the affine solver only")
    outs = []
    for level, (ff, fm) in enumerate(zip(fixed_feats, moving_feats)):
        shape, n_vox = result.shapes[level], float(torch.Size(result.shapes[level]).numel())
        params = result.params[level].detach()
        with torch.enable_grad():
            if exact:
                loss = _affine_loss(ff.detach(), fm.detach(), shape, (), n_vox)
                flat = params.flatten().requires_grad_(True)
                hess = _hessian(loss, flat)
                grad, = torch.autograd.grad(_affine_loss(ff, fm, shape, (), n_vox)(flat), flat, create_graph=True)
                eye = torch.eye(flat.numel(), device=flat.device, dtype=flat.dtype)
                params = params - torch.linalg.solve(hess + 1e-6 * eye, grad).view_as(params)
            for _ in range(0 if exact else s.phantom_steps):
                p = params if params.requires_grad else params.requires_grad_(True)
                disp = par.displacement(kind, p, shape, s.svf_steps)
                loss = _inner_loss(ff, fm, disp, (), shape, twice=True)
                grad, = torch.autograd.grad(loss * n_vox, p, create_graph=True)
                direction = par.smooth(kind, grad, s.sigma_grad) / result.step_scales[level]
                params = par.smooth(kind, params - par.normalised_step(kind, direction, shape, s.lr), s.sigma_warp)
            outs.append(par.displacement(kind, params, shape, s.svf_steps))
    return outs
