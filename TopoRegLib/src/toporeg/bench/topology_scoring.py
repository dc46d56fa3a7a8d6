"""`toporeg bench topology`: every method's map on every case of a set (pairs: L_sym(J|I) and the baselines;
outlier set: Q(J) and the control-adjusted baselines), masked per case, with each method's time."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..topology.baselines import baseline_scores, outlier_adjusted
from ..topology.score import bring_to_fixed, control_set_baselines, outlier_score, symmetric_score
from ..topology.synthetic import TopologyCase
from .topology_cases import OutlierGroup, scoring_mask
from .topology_methods import BASELINES, REFERENCE, BenchFitter, MethodPlan, _key

Log = Callable[[str], None]


@dataclass
class SetScores:
    """Per-subject masked score vectors of every method, their labels, seconds per method, one example."""

    name: str
    description: str
    labels: list[np.ndarray] = field(default_factory=list)
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    example: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    semantic: set[str] = field(default_factory=set)
    method_notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_plan(cls, name: str, description: str, plan: "MethodPlan") -> "SetScores":
        return cls(name, description, notes=list(plan.notes), semantic={f.name for f in plan.fitters if f.semantic},
                   method_notes={f.name: f.note for f in plan.fitters})

    def add(self, maps: dict[str, torch.Tensor], label: torch.Tensor, mask: np.ndarray | None,
            images: dict[str, torch.Tensor]) -> None:
        """One subject: every map restricted to `mask`; the first subject's full maps kept for the figure."""
        keep = np.ones(tuple(label.shape[2:]), bool) if mask is None else mask.astype(bool)
        self.labels.append(label[0, 0].cpu().numpy()[keep])
        for name, m in maps.items():
            self.scores.setdefault(name, []).append(m.detach().cpu().numpy().astype(np.float32)[keep])
        if not self.example:
            truth = label[0, 0].cpu().numpy()
            k = int(truth.reshape(-1, truth.shape[-1]).sum(0).argmax()) if truth.ndim == 3 else None
            shown = {**images, "truth": label[0, 0], **maps, **({} if mask is None else {"mask": mask})}
            self.example = {name: _as_2d(v, k) for name, v in shown.items()}


def _as_2d(t: torch.Tensor | np.ndarray, k: int | None) -> np.ndarray:
    """A (*S) or (1, 1, *S) map as a 2D array for the example figure (3D: axial slice k, the largest change)."""
    a = np.asarray(t.detach().cpu().float() if isinstance(t, torch.Tensor) else t, np.float32).squeeze()
    return a[..., k] if a.ndim == 3 else a


def _topo_maps(plan: MethodPlan, fixed: torch.Tensor, moving: torch.Tensor, out: SetScores,
               log: Log) -> dict[str, torch.Tensor]:
    """L_sym(J|I) of every TopoReg method (one failing method is recorded, not fatal)."""
    maps = {}
    for fitter in plan.fitters:
        if fitter.name in out.errors:
            continue
        try:
            maps[fitter.name] = symmetric_score(fixed, moving, fitter).l_sym
        except Exception as exc:  # noqa: BLE001 - one failing method must not sink the run
            out.errors[fitter.name] = f"{type(exc).__name__}: {exc}"
            log(f"[bench]   {fitter.name} FAILED {out.errors[fitter.name]}\n{traceback.format_exc()}")
    return maps


def _reference(plan: MethodPlan) -> BenchFitter:
    return plan.fitters[0]


def _baselines(plan: MethodPlan, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
    """The baselines with the reference method's forward μ of (J, I) (fitted already)."""
    mu = _reference(plan).forward[_key(fixed, moving)].mu
    return baseline_scores(fixed, moving, mu)


def _timed_baselines(plan: MethodPlan, fixed: torch.Tensor, moving: torch.Tensor,
                     out: SetScores) -> dict[str, torch.Tensor]:
    start = time.perf_counter()
    maps = _baselines(plan, fixed, moving)
    _add_seconds(out, {name: (time.perf_counter() - start) / len(maps) for name in maps})
    return maps


def _add_seconds(out: SetScores, seconds: dict[str, float]) -> None:
    for name, s in seconds.items():
        out.seconds[name] = out.seconds.get(name, 0.0) + s


def _fit_seconds(plan: MethodPlan) -> dict[str, float]:
    return {f.name: f.seconds for f in plan.fitters}


def _reset(plan: MethodPlan) -> None:
    for fitter in plan.fitters:
        fitter.clear()
        fitter.seconds = 0.0
    plan.registrations.clear()
    plan.registrations.seconds = 0.0


def _finish_timing(plan: MethodPlan, out: SetScores) -> None:
    """Fit seconds per method plus the shared registration (reported once, as its own row)."""
    _add_seconds(out, _fit_seconds(plan))
    out.seconds["registration (shared)"] = plan.registrations.seconds


def score_pairs(name: str, description: str, cases: Sequence[TopologyCase], plan: MethodPlan,
                log: Log) -> SetScores:
    """Every method on every pair (J = case.fixed, I = case.moving), masked per case."""
    out = SetScores.for_plan(name, description, plan)
    _reset(plan)
    for i, case in enumerate(cases):
        where = ", ".join(filter(None, (case.kind, case.meta.get("direction"))))
        log(f"[bench] {name} {i + 1}/{len(cases)} ({where}) …")
        fixed, moving = case.fixed.float(), case.moving.float()
        maps = _topo_maps(plan, fixed, moving, out, log)
        if REFERENCE in maps:
            maps.update(_timed_baselines(plan, fixed, moving, out))
        out.add(maps, case.change_mask, scoring_mask(case), {"J (fixed)": fixed, "I (moving)": moving})
        for fitter in plan.fitters:
            fitter.clear()
        plan.registrations.clear()
    _finish_timing(plan, out)
    return out


def _control_baseline_maps(plan: MethodPlan, controls: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """E_{K≠c}[s(I_c|K)] per control c and baseline, with the reference method's forward μ of each (c, K)."""
    out = []
    for c, control in enumerate(controls):
        maps = [_baselines(plan, control, other) for k, other in enumerate(controls) if k != c]
        out.append({name: torch.stack([m[name] for m in maps]).mean(0) for name in BASELINES})
    return out


def _outlier_baselines(plan: MethodPlan, test: torch.Tensor, controls: Sequence[torch.Tensor],
                       control_maps: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """outlier_adjusted per baseline: mean_c s(J|I_c) − mean_c E_K[s(I_c|K)]∘Φ_{J→I_c}."""
    ref = _reference(plan)
    per_control = [_baselines(plan, test, c) for c in controls]
    mus = [ref.forward[_key(test, c)].mu for c in controls]
    return {name: outlier_adjusted([m[name] for m in per_control],
                                   [bring_to_fixed(cm[name], mu) for cm, mu in zip(control_maps, mus)])
            for name in BASELINES}


def _q_maps(plan: MethodPlan, test: torch.Tensor, controls: list[torch.Tensor],
            control_q: dict[str, list[torch.Tensor]], out: SetScores) -> dict[str, torch.Tensor]:
    maps = {}
    for fitter in plan.fitters:
        if fitter.name in control_q:
            maps[fitter.name] = outlier_score(test, controls, fitter, control_baselines=control_q[fitter.name])[0]
    return maps


def score_outlier(name: str, description: str, groups: Sequence[OutlierGroup], plan: MethodPlan,
                  log: Log) -> SetScores:
    """Q(J) of every TopoReg method and the control-adjusted baselines, for every test of every group."""
    out = SetScores.for_plan(name, description, plan)
    _reset(plan)
    for group in groups:
        log(f"[bench] {name}: control-set baselines ({len(group.controls)} controls, {group.direction}) …")
        control_q = {}
        for fitter in plan.fitters:
            try:
                control_q[fitter.name] = control_set_baselines(group.controls, fitter)
            except Exception as exc:  # noqa: BLE001
                out.errors[fitter.name] = f"{type(exc).__name__}: {exc}"
                log(f"[bench]   {fitter.name} FAILED {out.errors[fitter.name]}")
        if REFERENCE not in control_q:
            continue
        start = time.perf_counter()
        control_maps = _control_baseline_maps(plan, group.controls)
        _add_seconds(out, {b: (time.perf_counter() - start) / len(BASELINES) for b in BASELINES})
        for i, case in enumerate(group.tests):
            log(f"[bench] {name} test {i + 1}/{len(group.tests)} ({group.direction}) …")
            test = case.fixed.float()
            maps = _q_maps(plan, test, group.controls, control_q, out)
            start = time.perf_counter()
            maps.update(_outlier_baselines(plan, test, group.controls, control_maps))
            _add_seconds(out, {b: (time.perf_counter() - start) / len(BASELINES) for b in BASELINES})
            out.add(maps, case.change_mask, scoring_mask(case), {"J (test)": test, "I (control 1)": group.controls[0]})
    _finish_timing(plan, out)
    return out
