"""`toporeg bench topology`: the methods compared. Every TopoReg method (training-free intensity and semantic ELBO
fits, trained topology models) starts from one shared engine registration per ordered pair, and records its forward
fit so the baselines use exactly TopoReg optimize-intensity's forward μ."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..progress import Progress
from ..topology.optimize import PairFit
from ..topology.pipeline import PairFitterFactory, TopologySettings
from .topology_cases import BenchSize

BASELINES = ("jacobian", "li_wyatt", "intensity")
REFERENCE = "TopoReg optimize-intensity"  # its forward μ is the baselines' registration
PairKey = tuple[int, int]


def _key(fixed: torch.Tensor, moving: torch.Tensor) -> PairKey:
    return id(fixed), id(moving)


class SharedRegistrations:
    """One engine registration per ordered pair (J, I), shared by every TopoReg method: same starting point."""

    def __init__(self, factory: PairFitterFactory):
        self.factory, self.cache, self.seconds = factory, {}, 0.0

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        key = _key(fixed, moving)
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.factory.initial_mu(fixed, moving)
            self.seconds += time.perf_counter() - start
        return self.cache[key]

    def clear(self) -> None:
        self.cache.clear()


class BenchFitter:
    """A PairFitter for `symmetric_score`: starts forward fits from the shared registration and records the forward
    fit of every ordered pair (the backward call of a symmetric score is the swap of the pending forward pair), so
    the baselines can use exactly TopoReg's forward μ."""

    def __init__(self, name: str, factory: PairFitterFactory, registrations: SharedRegistrations,
                 semantic: bool, note: str):
        self.name, self.factory, self.registrations = name, factory, registrations
        self.semantic, self.note = semantic, note
        self.forward: dict[PairKey, PairFit] = {}
        self._pending: PairKey | None = None
        self.seconds = 0.0

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor, init: torch.Tensor | None,
                 progress: Progress) -> PairFit:
        key = _key(fixed, moving)
        is_backward = self._pending is not None and key == self._pending[::-1]
        if init is None:
            init = self.registrations(fixed, moving)
        start = time.perf_counter()
        fit = self.factory(fixed, moving, init, progress)
        self.seconds += time.perf_counter() - start
        if is_backward:
            self._pending = None
        else:
            self.forward[key], self._pending = fit, key
        return fit

    @property
    def rescore(self):
        """Forwarded so that the outlier score re-scores with the control set's shared Σ_f, α, β."""
        return self.factory.rescore

    def clear(self) -> None:
        self.forward.clear()
        self._pending = None


@dataclass
class MethodPlan:
    fitters: list[BenchFitter]
    registrations: SharedRegistrations
    notes: list[str] = field(default_factory=list)


def _card(path: str) -> dict[str, Any]:
    from ..models.weights import read_card
    return read_card(path)


def _card_ndim(card: dict[str, Any]) -> int | None:
    return card.get("input_domain", {}).get("ndim", card.get("kwargs", {}).get("ndim"))


def _deepsim_path(ndim: int, given: str | None) -> tuple[str | None, str]:
    """The DeepSim extractor for `ndim`: the given one when its card's ndim matches (a missing file is an error),
    else the bundled `deepsim_seg_{ndim}d`; or None and why."""
    from ..errors import InputError
    from ..models.catalogue import resolve_model
    candidates = [str(resolve_model(given))] if given else []
    try:
        candidates.append(str(resolve_model(f"deepsim_seg_{ndim}d")))
    except InputError:
        pass
    for path in candidates:
        if _card_ndim(_card(path)) in (ndim, None):
            return path, f"DeepSim extractor {path}"
    return None, (f"TopoReg optimize-semantic skipped in {ndim}D: no {ndim}D DeepSim extractor "
                  f"(--deepsim-model, or bundled deepsim_seg_{ndim}d)")


def _learned_models(ndim: int, given: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, card) of each topology model for `ndim`: the given ones, else every catalogued one."""
    from ..models.catalogue import list_models, resolve_model
    paths = [str(resolve_model(m)) for m in given] if given else [
        m["path"] for m in list_models() if m.get("task") == "topology" and m.get("ndim") == ndim]
    cards = [(Path(p).stem, p, _card(p)) for p in paths]
    return [(name, p, card) for name, p, card in cards if _card_ndim(card) in (ndim, None)]


def _learned_note(path: str, card: dict[str, Any]) -> str:
    """What the model is and how far it was trained (its card's own statement), so a weak row is read as such."""
    converged = str(card.get("converged", "convergence not stated"))
    return (f"trained CVAE {path} ({card.get('kwargs', {}).get('features', '?')} features); card: "
            f"{converged[:160]}{'…' if len(converged) > 160 else ''}")


def plan_methods(ndim: int, grid: np.ndarray, size: BenchSize, deepsim: str | None,
                 models: Sequence[str]) -> MethodPlan:
    """Every TopoReg method available for `ndim`, sharing one registration cache; notes say what was skipped."""
    dev = torch.device("cpu")
    base = TopologySettings(preset=size.preset, iterations=size.iterations)
    intensity = PairFitterFactory(base, grid, dev)
    regs = SharedRegistrations(intensity)
    fitters = [BenchFitter(REFERENCE, intensity, regs, False, "training-free ELBO fit, intensity (MSE) features")]
    notes = []
    extractor, why = _deepsim_path(ndim, deepsim)
    if extractor is None:
        notes.append(why)
    else:
        semantic = PairFitterFactory(replace(base, features="semantic", deepsim_model=extractor), grid, dev)
        fitters.append(BenchFitter("TopoReg optimize-semantic", semantic, regs, True,
                                   f"training-free ELBO fit, semantic features of {extractor}"))
    learned = _learned_models(ndim, models)
    if not learned:
        notes.append(f"TopoReg learned skipped in {ndim}D: no {ndim}D topology model (--model, or catalogued)")
    for name, path, card in learned:
        factory = PairFitterFactory(replace(base, method="learned", model=path), grid, dev)
        is_semantic = card.get("kwargs", {}).get("features") == "semantic"
        fitters.append(BenchFitter(f"TopoReg learned {name}", factory, regs, is_semantic, _learned_note(path, card)))
    return MethodPlan(fitters, regs, notes)
