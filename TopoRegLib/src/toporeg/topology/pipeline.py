"""Topology heatmaps on Volumes: register, fit q(Φ|I,J) both ways, and map L_sym back onto the fixed grid.

Steps: (1) the optimisation engine registers MOVING (I) onto FIXED (J) on J's native grid (these are the
`registration/` outputs); (2) I is resampled onto J's grid with the affine part only and the deformable part
becomes the initial μ; (3) `method` fits q both ways: `optimize` (training-free ELBO fit, `optimize.fit_pair`) or
`learned` (one forward pass of a trained CVAE, `cvae.TopologyCVAE`); (4) L_sym(J|I), and Q(J) when controls
are given, in nats per voxel on J's grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..models.model_grid import (WHOLE_HEAD_LITRES, learned_domain_messages, foreground, model_grid, network_input,
                                whole_head_warning)
from ..io import Volume
from ..progress import Progress
from ..registration import RegistrationResult, preset, register
from ..registration.device import resolve_device
from ..transforms.affine import spatial_block
from ..transforms.sampling import identity_grid
from .optimize import PairFit, fit_pair, rescore
from .score import SymmetricScore, control_set_baselines, outlier_score, symmetric_score
from .work_grid import affine_onto_grid, to_target_grid

if TYPE_CHECKING:
    from .control_stats import ControlStatistics

DISPLAY_RANGE_NATS = 1000.0  # display = log(1 + max(L − median_fg(L), 0)) / log(1 + 1000), clipped to [0, 1]


@dataclass(frozen=True)
class TopologySettings:
    method: str = "optimize"            # optimize | learned
    features: str = "intensity"         # semantic | intensity
    model: str | None = None            # trained topology CVAE (learned)
    deepsim_model: str | None = None    # DeepSim extractor for semantic features (optimize)
    preset: str = "default"             # registration preset of the initial registration
    iterations: int = 60                # ELBO fit iterations per direction (optimize)
    learning_rate: float = 0.05
    fit_downsample: int = 0             # optimize: fit μ on 1/k-resolution features (0: auto, see fit_scale)

    def fit_scale(self, grid_shape: tuple[int, ...]) -> int:
        """The coarsening of the ELBO fit: as set, or (auto) 2 for semantic features on grids above 2¹⁹ voxels,
        where warping 80 feature channels every iteration would take tens of minutes per 3D pair on a CPU."""
        if self.fit_downsample:
            return self.fit_downsample
        return 2 if self.features == "semantic" and math.prod(grid_shape) > 2**19 else 1

    def __post_init__(self) -> None:
        if self.method not in ("optimize", "learned"):
            raise InputError(f"unknown topology method {self.method!r}: use 'optimize' or 'learned'")
        if self.features not in ("semantic", "intensity"):
            raise InputError(f"unknown features {self.features!r}: use 'semantic' or 'intensity'")
        if self.method == "learned" and not self.model:
            raise InputError("--method learned needs a trained topology model (--model NAME|PATH)")
        if self.iterations < 0:
            raise InputError("iterations must be >= 0")
        if self.fit_downsample < 0:
            raise InputError("fit_downsample must be >= 0 (0: automatic)")


@dataclass
class TopologyResult:
    heatmap: Volume                      # L_sym(J|I), nats per voxel, fixed grid
    display: Volume                      # 0–1 overlay map (see `display_map`)
    legend: dict[str, float]
    registration: RegistrationResult
    forward: PairFit
    outlier: Volume | None = None        # Q(J) when controls were given
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # input-domain warnings and device fallbacks (report.json)

    def summary(self) -> dict[str, Any]:
        heat = np.asarray(self.heatmap.data, np.float64)
        out = {"heatmap_nats": {"median": float(np.median(heat)), "p99": float(np.percentile(heat, 99)),
                                "max": float(heat.max())},
               "display_legend": self.legend, "prior": self.forward.prior.as_dict(),
               "feature_variance": [float(s) for s in self.forward.sigma2[:8]],
               "registration": self.registration.summary(), "timings": self.timings, "settings": self.settings}
        if self.outlier is not None:
            q = np.asarray(self.outlier.data, np.float64)
            out["outlier_nats"] = {"median": float(np.median(q)), "p99": float(np.percentile(q, 99))}
        return out


def display_map(heatmap: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """A fixed mapping to 0–1 for overlays: log(1 + max(L − m, 0)) / log(1 + 1000 nats), clipped; m = median of L
    over the foreground. Logarithmic because excesses span four orders of magnitude (a few nats where two brains'
    sulci differ, hundreds to thousands inside a lesion). Returns the map and the legend: the L value (nats) at
    display 0, 0.25, 0.5, 0.75 and 1."""
    values = heatmap[foreground] if foreground.any() else heatmap.ravel()
    m = float(np.median(values))
    scale = math.log1p(DISPLAY_RANGE_NATS)
    display = np.clip(np.log1p(np.maximum(heatmap - m, 0.0)) / scale, 0.0, 1.0)
    legend = {f"{d:g}": m + math.expm1(d * scale) for d in (0.0, 0.25, 0.5, 0.75, 1.0)}
    return display.astype(np.float32), legend


def _deformable_part(reg: RegistrationResult, dev: torch.device) -> torch.Tensor:
    """The registration's deformable residual μ0 on the fixed grid, in fixed voxels: its mapping with the affine
    part (fixed voxel → moving voxel) taken off."""
    fixed, moving = reg.fixed, reg.moving
    nd = fixed.spatial_ndim
    vox = spatial_block(np.linalg.inv(moving.affine) @ reg.affine_ras @ fixed.affine, nd)
    inv = torch.as_tensor(np.linalg.inv(vox), dtype=torch.float32, device=dev)
    coords = reg.moving_coords.to(dev).float()
    back = torch.einsum("rc,bc...->br...", inv[:nd, :nd], coords) + inv[:nd, nd].view(1, nd, *([1] * nd))
    return back - identity_grid(fixed.grid_shape, device=dev)


class PairFitterFactory:
    """Builds the (J, I, init, progress) → PairFit function of the chosen method on one work grid."""

    def __init__(self, settings: TopologySettings, grid_affine: np.ndarray, dev: torch.device):
        self.settings, self.grid_affine, self.dev = settings, grid_affine, dev
        from .features import make_features
        if settings.method == "learned":
            from .cvae import load_topology_model
            self.model, self.card = load_topology_model(settings.model, device=dev)
            self.features = self.model.feature_map(device=dev)
        else:
            self.model, self.card = None, {}
            self.features = make_features(settings.features, model=settings.deepsim_model, device=dev)

    def initial_mu(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """Deformable registration of two images already on the work grid (engine, same preset)."""
        nd = fixed.dim() - 2
        vol = lambda t: Volume(t[0, 0].cpu().numpy(), self.grid_affine)  # noqa: E731
        reg = register(vol(fixed), vol(moving), preset(self.settings.preset), device=self.dev)
        return reg.moving_coords.to(self.dev).float() - identity_grid(fixed.shape[2:], device=self.dev)[:, :nd]

    @property
    def rescore(self):
        """Re-scoring with shared Σ_f, α, β (training-free fits only; a model's parameters are shared)."""
        if self.model is not None:
            return None
        return lambda fit, fixed, moving, sigma2, prior: rescore(fit, fixed, moving, self.features, sigma2, prior)

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor, init: torch.Tensor | None,
                 progress: Progress) -> PairFit:
        if self.model is not None:
            return self.model.fit_pair(fixed, moving, self.features)
        if init is None:
            init = self.initial_mu(fixed, moving)
        return fit_pair(fixed, moving, self.features, init_mu=init, iterations=self.settings.iterations,
                        lr=self.settings.learning_rate, progress=progress,
                        coarse=self.settings.fit_scale(tuple(fixed.shape[2:])))


def topology_heatmap(fixed: Volume, moving: Volume, settings: TopologySettings | None = None, *,
                     controls: Sequence[Volume] = (), control_stats: "ControlStatistics | None" = None,
                     fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
                     progress: Progress | None = None, device: str | torch.device = "auto") -> TopologyResult:
    """L_sym(FIXED|MOVING) (and Q(FIXED) against `controls`, or against precomputed `control_stats` so that a
    cohort does not refit the O(|C|²) control baselines per image) on FIXED's native grid."""
    settings = settings or TopologySettings()
    progress = progress or Progress()
    if fixed.spatial_ndim != moving.spatial_ndim:
        raise InputError(f"fixed is {fixed.spatial_ndim}D but moving is {moving.spatial_ndim}D")
    if len(controls) == 1:
        raise InputError("the outlier score needs at least two control images (got one)")
    if controls and control_stats is not None:
        raise InputError("give either control images or control statistics for the outlier score, not both")
    stats_notes = control_stats.check_settings(settings) if control_stats is not None else []
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    reg = register(fixed, moving, preset(settings.preset), fixed_mask=fixed_mask, moving_mask=moving_mask,
                   progress=progress.sub("register", 0.0, 0.3), device=dev)
    timings["registration_seconds"] = round(time.perf_counter() - start, 3)
    factory = PairFitterFactory(settings, fixed.affine, dev)
    # the work grid: the fixed grid (optimize) or the trained model's grid (learned), see CONVENTIONS.md
    grid = fixed if factory.model is None else model_grid(fixed, factory.card, fixed_mask)
    factory.grid_affine = grid.affine
    j = network_input(fixed, grid, mask=fixed_mask, device=dev)
    i = network_input(moving, grid, mask=moving_mask, transform=reg.affine_ras, device=dev)
    mu0 = _deformable_part(reg, dev) if grid is fixed else None
    t0 = time.perf_counter()
    pair: SymmetricScore = symmetric_score(j, i, factory, init_mu=mu0, progress=progress.sub("topology", 0.3, 0.6))
    timings["topology_seconds"] = round(time.perf_counter() - t0, 3)
    heat = to_target_grid(pair.l_sym, grid, fixed)
    display, legend = display_map(heat, foreground(fixed, fixed_mask, (1.0, 99.0)))
    outlier = None
    if controls:
        t0 = time.perf_counter()
        control_t = [affine_onto_grid(c, fixed, grid, settings.preset, dev)[0] for c in controls]
        baselines = control_set_baselines(control_t, factory, progress=progress.sub("controls", 0.6, 0.9))
        q, _ = outlier_score(j, control_t, factory, control_baselines=baselines,
                             progress=progress.sub("outlier", 0.9, 1.0))
        outlier = Volume(to_target_grid(q, grid, fixed), fixed.affine)
        timings["outlier_seconds"] = round(time.perf_counter() - t0, 3)
    elif control_stats is not None:
        from .control_stats import outlier_from_statistics  # imported here: control_stats builds on this module
        t0 = time.perf_counter()
        outlier = outlier_from_statistics(fixed, control_stats, fixed_mask=fixed_mask,
                                          progress=progress.sub("outlier", 0.6, 1.0), device=dev)
        timings["outlier_seconds"] = round(time.perf_counter() - t0, 3)
    timings["total_seconds"] = round(time.perf_counter() - start, 3)
    messages = reg.messages + stats_notes + domain_messages(fixed, moving, settings, factory.card, grid,
                                                            fixed_mask, moving_mask)
    return TopologyResult(
        heatmap=Volume(heat, fixed.affine), display=Volume(display, fixed.affine), legend=legend,
        registration=reg, forward=pair.forward, outlier=outlier, timings=timings,
        settings={k: v for k, v in vars(settings).items()}, messages=list(dict.fromkeys(messages)))


def domain_messages(fixed: Volume, moving: Volume, settings: TopologySettings, model_card: dict[str, Any],
                    grid: Volume, fixed_mask: Volume | None = None, moving_mask: Volume | None = None) -> list[str]:
    """Warnings shown with the heatmap: a whole head against a skull-stripped brain (skull and scalp then read as
    topological change), and the trained model's input domain (the topology model's card or, for semantic features,
    the DeepSim extractor's), with the checks that registration and segmentation use."""
    msgs = []
    fg_fixed, fg_moving = foreground(fixed, fixed_mask), foreground(moving, moving_mask)
    if fixed.spatial_ndim == 3 and fg_fixed.any() and fg_moving.any():
        litres = [float(fg.sum() * np.prod(v.spacing[:3])) / 1e6 for fg, v in ((fg_fixed, fixed), (fg_moving, moving))]
        kinds = ["a whole head" if value > WHOLE_HEAD_LITRES else "a skull-stripped brain" for value in litres]
        if kinds[0] != kinds[1]:
            msgs.append(f"the fixed image looks like {kinds[0]} ({litres[0]:.1f} L of foreground) but the moving "
                        f"image like {kinds[1]} ({litres[1]:.1f} L): skull and scalp will show as topological change "
                        "(give brain masks, or compare images of the same kind)")
    card = model_card
    if settings.method == "optimize" and settings.features == "semantic" and settings.deepsim_model:
        from ..models.weights import read_card
        card = read_card(settings.deepsim_model)
    if not card:
        return msgs
    if settings.method == "learned":  # field of view and skull of the fixed image against the model's grid
        msgs += learned_domain_messages(fixed, grid, card, fixed_mask)
    else:
        head = whole_head_warning(fg_fixed, fixed.spacing[:fixed.spatial_ndim], card,
                                  "give a brain mask or a skull-stripped image")
        msgs += [head] if head else []
    head = whole_head_warning(fg_moving, moving.spacing[:moving.spatial_ndim], card,
                              "give a moving mask or a skull-stripped image")
    return msgs + ([f"moving image: {head}"] if head else [])
