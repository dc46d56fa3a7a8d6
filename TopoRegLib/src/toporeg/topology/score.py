"""The symmetric score L_sym and the control-set outlier score Q (Czolbe et al. 2021, Sec. 3, Eq. 7).

Paper notation (CONVENTIONS.md): J = fixed, I = moving, Φ_{J→I} = id + μ with μ on J's grid.
  L_sym(J|I) = L(J|I) + L(I|J)∘Φ_{J→I}        (L(I|J) lives on I's grid; sampling it at Φ_{J→I} brings it to J)
  Q(J)       = E_{I∈C}[ L_sym(J|I) − E_{K∈C}[L_sym(I|K)]∘Φ_{J→I} ]
If Φ_{I→J} = Φ_{J→I}⁻¹ then L_sym(I|J) = L_sym(J|I)∘Φ_{I→J} up to interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..progress import Progress
from ..transforms.integration import invert_displacement
from ..transforms.sampling import warp
from .optimize import PairFit, shared_parameters
from .prior import PriorParameters

# fit(fixed J, moving I, init_mu, progress) → q(Φ|I,J) and L(J|I) on J's grid
PairFitter = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", Progress], PairFit]


@dataclass
class SymmetricScore:
    forward: PairFit    # L(J|I), μ_{J→I}
    backward: PairFit   # L(I|J), μ_{I→J}

    @property
    def l_sym(self) -> torch.Tensor:
        """(*S) L_sym(J|I) on J's grid, nats per voxel."""
        return self.forward.score + bring_to_fixed(self.backward.score, self.forward.mu)


def bring_to_fixed(moving_map: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """A (*S) map on I's grid sampled at Φ_{J→I} = id + μ: the map seen from J's grid."""
    return warp(moving_map[None, None], mu, padding="border")[0, 0]


def symmetric_score(fixed: torch.Tensor, moving: torch.Tensor, fit: PairFitter, *,
                    init_mu: torch.Tensor | None = None, progress: Progress | None = None) -> SymmetricScore:
    """Fit both directions; the backward fit starts from the inverse of the forward mapping."""
    progress = progress or Progress()
    forward = fit(fixed, moving, init_mu, progress.sub("topology", 0.0, 0.5))
    backward_init = invert_displacement(forward.mu)
    backward = fit(moving, fixed, backward_init, progress.sub("topology", 0.5, 1.0))
    return SymmetricScore(forward, backward)


@dataclass
class ControlBaselines:
    """E_{K∈C\\{I}}[L_sym(I|K)] for every control I (on I's grid), and the one Σ_f, α, β they are scored with
    (geometric means over the control pairs; `None` for a trained model, whose parameters are already shared).
    Behaves as the list of maps."""

    maps: list[torch.Tensor]
    shared: tuple[torch.Tensor, PriorParameters] | None = None

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.maps[i]

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.maps)


def _rescored(pair: SymmetricScore, fixed: torch.Tensor, moving: torch.Tensor, fit: PairFitter,
              shared) -> SymmetricScore:
    rescore = getattr(fit, "rescore", None)
    if shared is None or rescore is None:
        return pair
    return SymmetricScore(rescore(pair.forward, fixed, moving, *shared),
                          rescore(pair.backward, moving, fixed, *shared))


def outlier_score(test: torch.Tensor, controls: Sequence[torch.Tensor], fit: PairFitter, *,
                  control_baselines: "ControlBaselines | Sequence[torch.Tensor] | None" = None,
                  progress: Progress | None = None) -> tuple[torch.Tensor, "ControlBaselines | list[torch.Tensor]"]:
    """Q(J) for J = `test` against the control set C (each (1, 1, *S) on the same grid).

    `control_baselines` from `control_set_baselines` (computed here, leave-one-out, O(|C|²) fits, when not
    given). With a training-free fitter every map is re-scored with the control set's shared Σ_f, α, β, so that
    Q subtracts nats of the same scale. Returns Q and the baselines (reuse them for further test images)."""
    progress = progress or Progress()
    if len(controls) < 2:
        raise ValueError("the outlier score needs at least two control images")
    if control_baselines is None:
        control_baselines = control_set_baselines(controls, fit, progress=progress.sub("controls", 0.0, 0.7))
    shared = getattr(control_baselines, "shared", None)
    total = torch.zeros(test.shape[2:], device=test.device)
    sub = progress.sub("outlier", 0.7, 1.0)
    for i, (control, baseline) in enumerate(zip(controls, control_baselines)):
        pair = symmetric_score(test, control, fit, progress=sub.sub("outlier", i / len(controls),
                                                                      (i + 1) / len(controls)))
        pair = _rescored(pair, test, control, fit, shared)
        total += pair.l_sym - bring_to_fixed(baseline, pair.forward.mu)
    return total / len(controls), control_baselines


def control_set_baselines(controls: Sequence[torch.Tensor], fit: PairFitter, *,
                          progress: Progress | None = None) -> ControlBaselines:
    """E_{K∈C\\{I}}[L_sym(I|K)] for every control I, on I's grid (leave-one-out mean), in the shared scale."""
    progress = progress or Progress()
    n = len(controls)
    pairs: dict[tuple[int, int], SymmetricScore] = {}
    for i, control in enumerate(controls):
        for j, other in enumerate(controls):
            if j != i:
                k = i * n + j
                pairs[i, j] = symmetric_score(control, other, fit,
                                              progress=progress.sub("controls", k / n**2, (k + 1) / n**2))
    shared = None
    if getattr(fit, "rescore", None) is not None:
        shared = shared_parameters([p.forward for p in pairs.values()] + [p.backward for p in pairs.values()])
        pairs = {(i, j): _rescored(p, controls[i], controls[j], fit, shared) for (i, j), p in pairs.items()}
    maps = [torch.stack([pairs[i, j].l_sym for j in range(n) if j != i]).mean(0) for i in range(n)]
    return ControlBaselines(maps, shared)
