"""Registration settings and the fast / default / accurate presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from ..errors import InputError

TransformModel = Literal["svf", "displacement", "affine", "rigid"]
TRANSFORM_MODELS = ("svf", "displacement", "affine", "rigid")


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything that controls one optimisation-based registration.

    Budgets are per pyramid level (coarse → fine); `levels` are downsampling factors of the fixed grid.
    The deformable field lives at 1/`field_factor` of each level's resolution and is smoothed by a
    Gaussian of `field_sigma` voxels (a fluid-like reparameterisation that makes Adam converge fast).
    """

    transform: TransformModel = "svf"
    similarity: str = "lncc"
    ncc_window: int = 5
    nmi_bins: int = 32
    affine_similarity: str | None = None  # None: the same as `similarity`
    affine_levels: tuple[int, ...] = (4, 2)
    affine_iterations: tuple[int, ...] = (80, 40)
    affine_lr: float = 0.02
    levels: tuple[int, ...] = (4, 2, 1)
    iterations: tuple[int, ...] = (100, 60, 30)
    learning_rate: float = 0.5
    level_lr_decay: float = 0.5  # learning rate × decay per finer level (Adam's first steps are ~lr each)
    field_factor: int = 2
    field_sigma: float = 1.0
    regularizer: Literal["diffusion", "bending"] = "diffusion"
    regularization: float = 1.0
    svf_steps: int = 7
    early_stop_window: int = 10
    early_stop_tolerance: float = 1e-4
    initial_alignment: Literal["com", "none"] = "com"
    seed: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORM_MODELS:
            raise InputError(f"unknown transform '{self.transform}' (choose from {', '.join(TRANSFORM_MODELS)})")
        if len(self.levels) != len(self.iterations) or len(self.affine_levels) != len(self.affine_iterations):
            raise InputError("each pyramid level needs an iteration budget")
        if any(f < 1 for f in self.levels + self.affine_levels):
            raise InputError("pyramid factors must be >= 1")

    def with_(self, **changes) -> "RegistrationSettings":
        return replace(self, **changes)


# Measured on the 2 mm Colin27 benchmark case (docs/benchmarks): most of the time goes to full-resolution
# iterations, and a learning rate halved per finer level lets a few of them refine instead of jitter.
PRESETS: dict[str, RegistrationSettings] = {
    "fast": RegistrationSettings(affine_levels=(4,), affine_iterations=(30,), levels=(4, 2), iterations=(40, 15)),
    "default": RegistrationSettings(affine_levels=(4,), affine_iterations=(60,), levels=(4, 2, 1),
                                    iterations=(60, 30, 5)),
    "accurate": RegistrationSettings(levels=(4, 2, 1), iterations=(100, 60, 20)),
}


def preset(name: str, **overrides) -> RegistrationSettings:
    try:
        base = PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})") from None
    return base.with_(**{k: v for k, v in overrides.items() if v is not None})
