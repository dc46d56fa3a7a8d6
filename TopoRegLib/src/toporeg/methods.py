"""One call per registration method (optimize, learned, dio, carl), shared by the CLI, the Slicer Logic, the
browser panel and the benchmarks, so a method behaves the same wherever it is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .io import Volume
from .progress import Progress
from .registration import RegistrationResult, RegistrationSettings, register

METHODS = ("optimize", "learned", "dio", "carl")
DEFAULT_MODELS = {"learned": {2: "vxm_diff_2d", 3: "vxm_diff_3d_2mm"}, "dio": {2: "dio_2d", 3: "dio_3d_2mm"},
                  "carl": {2: "carl_2d", 3: "carl_3d_2mm"}}
TRAINING_CONFIGS = {"learned": "vxm_diff", "dio": "dio", "carl": "carl"}
PREALIGN = ("affine", "none")


@dataclass
class MethodOptions:
    """Options of the learned methods; each is refused by the methods that have no use for it."""

    model: str | None = None            # bundled name or .safetensors path; None: the bundled default for the dim
    refine: int = 0                     # learned: optimisation iterations; carl: instance-optimisation steps
    prealign: str | None = None         # affine | none (default: none for carl, affine otherwise)
    dio_transform: str | None = None    # dio solver's transform (svf | displacement | affine)
    iterations: tuple[int, ...] | None = None   # dio solver iterations per scale, coarse → fine
    depth: int = 3                      # carl: steps to run (1: coordinate attention only)
    prompt_labels: tuple[Volume, Volume] | None = None    # dio: (fixed labels, moving labels)
    prompt_points: tuple[np.ndarray, np.ndarray] | None = None  # dio: (fixed, moving) RAS-mm landmarks
    label_weight: float = 1.0
    landmark_weight: float = 0.01

    def check(self, method: str) -> None:
        if method not in METHODS:
            raise InputError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
        only = {"dio": [("iterations", self.iterations is not None), ("label prompt", self.prompt_labels is not None),
                        ("landmark prompt", self.prompt_points is not None)],
                "carl": [("depth", self.depth != 3)],
                "learned|carl": [("refine", self.refine != 0)],
                "learned|dio|carl": [("model", self.model is not None), ("prealign", self.prealign is not None)]}
        for allowed, options in only.items():
            for name, given in options:
                if given and method not in allowed.split("|"):
                    raise InputError(f"{name} applies to --method {allowed.replace('|', '/')}, not {method}")
        if self.prealign not in (None, *PREALIGN):
            raise InputError(f"prealign must be one of {', '.join(PREALIGN)}")
        if self.refine < 0:
            raise InputError("refine must be >= 0")
        if not 1 <= self.depth <= 3:
            raise InputError("depth must be 1, 2 or 3")


def model_for(method: str, ndim: int, name: str | None = None):
    """The weights path of `name`, or of the bundled default model of `method` for `ndim`-D images."""
    from .models.catalogue import resolve_model

    if name is not None:
        return resolve_model(name)
    default = DEFAULT_MODELS[method][ndim]
    try:
        return resolve_model(default)
    except InputError:
        raise InputError(
            f"no {ndim}D model for --method {method} is installed (expected '{default}'); train one with "
            f"`toporeg train {'registration' if method == 'learned' else method} --config "
            f"{TRAINING_CONFIGS[method]}_{'2d' if ndim == 2 else '3d_2mm'}*.json` (a GPU helps for 3D) and pass "
            "--model PATH, or use --method optimize") from None


def register_with_method(method: str, fixed: Volume, moving: Volume, settings: RegistrationSettings,
                         options: MethodOptions | None = None, *, fixed_mask: Volume | None = None,
                         moving_mask: Volume | None = None, weights: Volume | None = None,
                         initial_transform: np.ndarray | None = None, progress: Progress | None = None,
                         device: str = "auto") -> RegistrationResult:
    """Register `moving` onto `fixed` with `method`; outputs on the fixed image's native grid."""
    options = options or MethodOptions()
    options.check(method)
    if method != "optimize" and weights is not None:
        raise InputError(f"similarity weights (and --topology-aware) apply to --method optimize, not {method}")
    common: dict[str, Any] = dict(fixed_mask=fixed_mask, moving_mask=moving_mask, progress=progress, device=device)
    if method == "optimize":
        return register(fixed, moving, settings, weights=weights, initial_transform=initial_transform, **common)
    model = model_for(method, fixed.spatial_ndim, options.model)
    if method == "learned":
        from .models.inference import learned_register

        return learned_register(fixed, moving, model, refine_iterations=options.refine, affine_settings=settings,
                                prealign=options.prealign or "affine", initial_transform=initial_transform, **common)
    if method == "dio":
        from .dio.inference import dio_register

        return dio_register(fixed, moving, model, transform=options.dio_transform, iterations=options.iterations,
                            prealign=options.prealign or "affine", affine_settings=settings,
                            initial_transform=initial_transform, prompt_labels=options.prompt_labels,
                            label_weight=options.label_weight, prompt_points=options.prompt_points,
                            landmark_weight=options.landmark_weight, **common)
    from .carl.inference import carl_register

    return carl_register(fixed, moving, model, prealign=options.prealign or "none", depth=options.depth,
                         refine=options.refine, affine_settings=settings, initial_transform=initial_transform, **common)
