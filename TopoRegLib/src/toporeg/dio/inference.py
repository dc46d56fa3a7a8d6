"""DIO at inference: affine pre-alignment → model grid → learned features → solver (any transform) → native grid.

The features are computed once per image; the solver's transform (`svf` by default: diffeomorphic, no folds;
`displacement` as in training; `affine`) and its iteration caps are test-time choices (seed A.2.4, A.9.4).
Prompts join the solver's inner loss without retraining (seed A.10.4): a pair of label maps (`prompt_labels`,
fixed-grid and moving-grid volumes) and/or paired landmarks (`prompt_points`, (K, 3) RAS mm each).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..geometry import resample_to
from ..io import Volume
from ..models.grid_registration import GridField, LearnedRegistrationResult, prealign as run_prealign
from ..models.grid_registration import load_method_model, register_on_model_grid
from ..progress import Progress
from ..registration import RegistrationSettings
from ..registration.device import resolve_device
from .features import DIOFeatureNet
from .fidelity import LabelTerm, LandmarkTerm
from .solver import SolverSettings, solve

DEFAULT_TRANSFORM = "svf"


def solver_settings(card: dict[str, Any], *, transform: str | None = None,
                    iterations: tuple[int, ...] | None = None) -> SolverSettings:
    """The card's training solver (defaults: A.9.4) with the user's transform and iteration caps."""
    trained = SolverSettings(**card.get("solver", {}))
    changes: dict[str, Any] = {"transform": transform or DEFAULT_TRANSFORM}
    if iterations is not None:
        if len(iterations) != len(trained.iterations):
            raise InputError(f"this model solves on {len(trained.iterations)} scales: give {len(trained.iterations)} "
                             f"iteration counts (coarse to fine), not {len(iterations)}")
        changes["iterations"] = tuple(int(n) for n in iterations)
    return trained.with_(**changes)


def _grid_voxels(points_ras: np.ndarray, grid: Volume, ras_to_grid_ras: np.ndarray) -> torch.Tensor:
    """(K, ndim) voxel coordinates on the model grid of RAS points (mapped by `ras_to_grid_ras` first)."""
    pts = np.c_[np.asarray(points_ras, float)[:, :3], np.ones(len(points_ras))]
    vox = pts @ (np.linalg.inv(grid.affine) @ ras_to_grid_ras).T
    return torch.as_tensor(vox[:, : grid.spatial_ndim], dtype=torch.float32)


def _prompt_terms(grid: Volume, transform_ras: np.ndarray, labels, points, label_weight: float,
                  landmark_weight: float, dev: torch.device) -> list:
    terms = []
    if labels is not None:
        fixed_labels, moving_labels = labels
        f = resample_to(fixed_labels, grid, interpolation="nearest")
        m = resample_to(moving_labels, grid, interpolation="nearest", transform=transform_ras)
        as_tensor = lambda v: torch.as_tensor(np.asarray(v.data).reshape(grid.grid_shape).astype(np.int64),  # noqa: E731
                                              device=dev)[None, None]
        terms.append(LabelTerm(as_tensor(f), as_tensor(m), label_weight))
    if points is not None:
        fixed_pts, moving_pts = (np.asarray(p, float) for p in points)
        if fixed_pts.shape != moving_pts.shape:
            raise InputError(f"landmark prompts need as many fixed as moving points ({len(fixed_pts)} vs "
                             f"{len(moving_pts)}), paired in order")
        terms.append(LandmarkTerm(_grid_voxels(fixed_pts, grid, np.eye(4)).to(dev),
                                  _grid_voxels(moving_pts, grid, np.linalg.inv(transform_ras)).to(dev),
                                  landmark_weight))
    return terms


def dio_register(fixed: Volume, moving: Volume, model: torch.nn.Module | str | Path, *, transform: str | None = None,
                 iterations: tuple[int, ...] | None = None, prealign: str = "affine",
                 affine_settings: RegistrationSettings | None = None, fixed_mask: Volume | None = None,
                 moving_mask: Volume | None = None, initial_transform: np.ndarray | None = None,
                 prompt_labels: tuple[Volume, Volume] | None = None, label_weight: float = 1.0,
                 prompt_points: tuple[np.ndarray, np.ndarray] | None = None, landmark_weight: float = 0.01,
                 card: dict[str, Any] | None = None, progress: Progress | None = None,
                 device: str | torch.device = "auto") -> LearnedRegistrationResult:
    """Register `moving` onto `fixed` with DIO features (module, or weights path with its card)."""
    progress = progress or Progress()
    start = time.perf_counter()
    dev = resolve_device(device)
    model, card = load_method_model(model, card, fixed.spatial_ndim, dev, DIOFeatureNet, "dio")
    solver = solver_settings(card, transform=transform, iterations=iterations)
    settings = affine_settings or RegistrationSettings()
    pre, messages = run_prealign(fixed, moving, prealign, settings, initial=initial_transform, fixed_mask=fixed_mask,
                                 moving_mask=moving_mask, progress=progress.sub("affine", 0.0, 0.4), device=dev)

    def features_then_solver(m_net: torch.Tensor, f_net: torch.Tensor, grid: Volume, step: Progress) -> GridField:
        step.update("features", 0.0, "learned features of both images")
        with torch.no_grad():
            fixed_feats, moving_feats = model(f_net), model(m_net)
        terms = _prompt_terms(grid, pre, prompt_labels, prompt_points, label_weight, landmark_weight, dev)
        result = solve(fixed_feats, moving_feats, solver, extra_terms=terms,
                       progress=lambda fraction, message: step.update("solver", 0.1 + 0.9 * fraction, message),
                       should_stop=lambda: step.token.cancelled)
        return GridField(result.displacement, result.inverse, settings={
            "prealign": prealign, "solver": solver.as_dict(), "solver_iterations": result.iterations,
            "solver_converged": result.converged, "solver_seconds": round(result.seconds, 4),
            "prompts": {"labels": prompt_labels is not None, "landmarks": 0 if prompt_points is None
                        else int(len(prompt_points[0])), "label_weight": label_weight,
                        "landmark_weight": landmark_weight}})

    return register_on_model_grid(fixed, moving, card, features_then_solver, name="dio", transform_ras=pre,
                                  similarity=settings.similarity, ncc_window=settings.ncc_window,
                                  fixed_mask=fixed_mask, moving_mask=moving_mask, messages=messages,
                                  progress=progress.sub("dio", 0.4, 1.0), device=dev, start=start)
