"""`toporeg bench topology`: pixel-wise ROC/AUC of topological-change maps (issue #5, "Benchmark").

    toporeg bench topology [--quick] [--out docs/benchmarks] [--deepsim-model PATH] [--model NAME_OR_PATH ...]
                           [--subjects N] [--subjects-3d N] [--seed S] [--threads N]

Sets (all built here from the template cache, `python -m toporeg.training.dataset_cache`):
  brain_2d / brain_3d  fixed J = one subject's template (Colin27 or MNI152) with an inserted change (lesion with
                       mass effect, resection cavity, ventricle opened/closed), smoothly deformed and re-contrasted;
                       moving I = the OTHER subject's template (inter-subject: normal anatomical variability gives
                       realistic false positives; both directions). Scored inside J's brain mask dilated by 2 voxels.
  cells_2d             generated SBEM-like slice pairs (organelles appearing/disappearing, merging walls).
  outlier_2d           test images with lesions (one subject) scored against a control set of the other subject's
                       healthy, deformed images: Q for TopoReg, control-mean-subtracted maps for the baselines.
  topology-aware rows  lesion cases with mass effect (intra-subject, so the true field is known): plain vs
                       topology-aware registration (similarity weights 1 − display map), displacement error.

Every TopoReg method of one pair starts from the SAME engine registration (one per ordered pair, shared), and the
baselines (Jacobian, Li & Wyatt, intensity difference) use the forward μ of TopoReg optimize-intensity's fit.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..io import Volume
from ..progress import Progress
from ..topology.baselines import baseline_scores, outlier_adjusted
from ..topology.optimize import PairFit
from ..topology.pipeline import PairFitterFactory, TopologySettings, topology_heatmap
from ..topology.score import bring_to_fixed, control_set_baselines, outlier_score, symmetric_score
from ..topology.synthetic import (TopologyCase, dilate, brain_cases, cell_cases, control_and_outlier_sets,
                                  template_arrays)
from ..training.dataset_cache import DEFAULT_CACHE, load_cache
from ..training.synth import RandomFields
from .registration import format_value, git_commit, machine
from .roc import bootstrap_auc, roc_curve

JSON_NAME, MD_NAME, PNG_STEM = "topology_benchmark.json", "topology_benchmark.md", "topology_benchmark"
SUBJECTS = ("colin27", "mni152")
DIRECTIONS = (("colin27", "mni152"), ("mni152", "colin27"))  # (changed subject J, other subject I)
BASELINES = ("jacobian", "li_wyatt", "intensity")
REFERENCE = "TopoReg optimize-intensity"  # its forward μ is the baselines' registration
MASK_DILATION = 2
TARGET_MARGIN = 0.05
PAPER_AUC = {  # Czolbe et al. 2021 (different data; reference only)
    "cells": {"semantic TopoReg": 0.88, "li_wyatt": 0.75, "jacobian": 0.75, "MSE TopoReg": 0.72},
    "brain": {"semantic TopoReg": 0.80, "li_wyatt": 0.70, "jacobian": 0.62, "MSE TopoReg": 0.61},
}
Log = Callable[[str], None]


# --- sizes ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSize:
    """Counts and budgets of one run. brain_* and aware_* are per direction / cases; tests split over directions."""

    brain_2d: int = 8            # defaults: ~15–20 min on 2 busy CPU cores with a 2D DeepSim extractor
    brain_3d: int = 2
    cells: int = 10
    controls: int = 3
    tests: int = 4
    aware_2d: int = 6
    aware_3d: int = 2
    downsample: int = 1          # 2: 4 mm templates (2D slices 48 × 56), for quick runs and tests
    cell_shape: tuple[int, int] = (128, 128)
    iterations: int = 60         # ELBO fit iterations per direction
    preset: str = "default"      # engine preset of the shared registration
    n_boot: int = 1000

    def with_subjects(self, n: int | None, n_3d: int | None) -> "BenchSize":
        """--subjects N: N brain cases per direction, N cell pairs, N tests over max(2, N // 2) controls."""
        out = self if n is None else replace(self, brain_2d=n, cells=n, tests=n, controls=max(2, n // 2),
                                              aware_2d=max(1, n // 2))
        return out if n_3d is None else replace(out, brain_3d=n_3d, aware_3d=min(out.aware_3d, n_3d))


FULL = BenchSize()
QUICK = BenchSize(brain_2d=2, brain_3d=0, cells=2, controls=2, tests=2, aware_2d=1, aware_3d=0, downsample=2,
                  cell_shape=(48, 56), iterations=10, preset="fast", n_boot=200)


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class Templates:
    arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name → (image, brain mask, tissue)
    affine: np.ndarray                                             # voxel → RAS mm of the (3D) grid

    @property
    def spacing_mm(self) -> float:
        return float(abs(self.affine[0, 0]))


def load_templates(path: str | Path = DEFAULT_CACHE, downsample: int = 1) -> Templates:
    """The cached 2 mm templates, optionally box-averaged by `downsample` (masks: > ½, tissue: nearest)."""
    cache = load_cache(path)
    arrays = {name: template_arrays(cache, name) for name in SUBJECTS}
    affine = np.array(cache["grid_affine"], np.float64)
    if downsample > 1:
        arrays = {name: _coarsen(arrs, downsample) for name, arrs in arrays.items()}
        affine = affine @ np.diag([downsample, downsample, downsample, 1.0])
    return Templates(arrays, affine)


def _coarsen(arrays: tuple[np.ndarray, ...], f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-average image and mask by f (mask > ½), tissue labels by taking every f-th voxel."""
    image, mask, tissue = arrays

    def pool(a: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(torch.as_tensor(a, dtype=torch.float32)[None, None], f)[0, 0]

    return pool(image).numpy(), (pool(mask) > 0.5).numpy().astype(np.uint8), tissue[::f, ::f, ::f]


def _other_subject(templates: Templates, name: str, like: TopologyCase) -> torch.Tensor:
    """The other subject's image on the case's grid: the same axial slice for 2D cases, the volume in 3D."""
    image = torch.as_tensor(templates.arrays[name][0], dtype=torch.float32)
    k = like.meta.get("slice_k")
    return (image[..., k] if k is not None else image)[None, None]


def inter_subject_cases(templates: Templates, n: int, ndim: int, rng: RandomFields) -> list[TopologyCase]:
    """n changed-subject cases per direction, each with moving I replaced by the other subject's template."""
    cases = []
    for changed, other in DIRECTIONS:
        for case in brain_cases(*templates.arrays[changed], n, ndim, rng):
            case.moving = _other_subject(templates, other, case)
            case.meta["direction"] = f"{changed} changed vs {other}"
            cases.append(case)
    return cases


@dataclass
class OutlierGroup:
    controls: list[torch.Tensor]       # healthy, deformed images of one subject
    tests: list[TopologyCase]          # the other subject with lesions (J)
    direction: str


def outlier_groups(templates: Templates, n_controls: int, n_tests: int, rng: RandomFields) -> list[OutlierGroup]:
    """Per direction: controls from the other subject (deformed, re-contrasted, no change), lesion tests."""
    groups = []
    for d, (changed, other) in enumerate(DIRECTIONS):
        n = n_tests // 2 + (n_tests % 2 if d == 0 else 0)
        if n == 0:
            continue
        controls, _ = control_and_outlier_sets(*templates.arrays[other], n_controls, 0, 2, rng)
        tests = brain_cases(*templates.arrays[changed], n, 2, rng, ("lesion",))
        groups.append(OutlierGroup([c.fixed for c in controls], tests, f"{changed} tests vs {other} controls"))
    return groups


def scoring_mask(case: TopologyCase) -> np.ndarray | None:
    """Where voxels are scored: J's brain mask dilated by 2 voxels (None: the whole image, e.g. cells)."""
    if case.brain_mask is None:
        return None
    return dilate(case.brain_mask, MASK_DILATION)[0, 0].cpu().numpy()


# --- methods ------------------------------------------------------------------------------------------------------
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


# --- scoring ------------------------------------------------------------------------------------------------------
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


# --- summary: AUC, bootstrap, ROC ---------------------------------------------------------------------------------
def _curve(scores: list[np.ndarray], labels: list[np.ndarray], points: int = 200) -> dict[str, list[float]]:
    """The pooled ROC curve, thinned to about `points` points for the JSON and the figure."""
    fpr, tpr, _ = roc_curve(np.concatenate(scores), np.concatenate(labels))
    idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).round().astype(int), len(fpr) - 1])
    return {"fpr": [round(float(v), 5) for v in fpr[idx]], "tpr": [round(float(v), 5) for v in tpr[idx]]}


def summarise(scores: SetScores, n_boot: int, seed: int) -> dict[str, Any]:
    """Rows per method (pooled AUC, bootstrap over subjects, seconds per subject, ROC curve) and the target check."""
    n = len(scores.labels)
    rows = []
    for name, per_subject in scores.scores.items():
        if n == 0 or len(per_subject) != n:
            continue  # failed on some subject: reported in errors
        stats = bootstrap_auc(per_subject, scores.labels, n_boot=n_boot, seed=seed)
        rows.append({"method": name, **stats, "seconds_per_subject": scores.seconds.get(name, 0.0) / max(n, 1),
                     "kind": "baseline" if name in BASELINES else "TopoReg", "semantic": name in scores.semantic,
                     "note": scores.method_notes.get(name) or _baseline_note(name, scores.name),
                     "roc": _curve(per_subject, scores.labels)})
    positives = sum(int(y.sum()) for y in scores.labels)
    return {"name": scores.name, "description": scores.description, "subjects": n, "positive_voxels": positives,
            "scored_voxels": sum(y.size for y in scores.labels), "rows": rows, "errors": scores.errors,
            "notes": scores.notes, "registration_seconds_per_subject":
                scores.seconds.get("registration (shared)", 0.0) / max(n, 1),
            "target": target_check(rows)}


def _baseline_note(name: str, set_name: str) -> str:
    what = {"jacobian": "log(det J_Φ)²", "li_wyatt": "Li & Wyatt 2010 (residual where J has no edge)",
            "intensity": "(I∘Φ − J)²"}[name]
    adjusted = ", minus the control-set mean (outlier setting)" if set_name.startswith("outlier") else ""
    return f"{what}, Φ = TopoReg optimize-intensity's forward μ{adjusted}"


def target_check(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Issue target: the semantic TopoReg model has the highest AUC of all unsupervised methods, ≥ 0.05 above the
    best baseline. Uses the pooled AUC; the best semantic TopoReg variant counts."""
    sem = [r for r in rows if r["semantic"]]
    base = [r for r in rows if r["kind"] == "baseline"]
    if not sem or not base:
        return {"met": None, "statement": "not measured: no semantic TopoReg method in this set"}
    best_sem = max(sem, key=lambda r: r["auc"])
    best_base = max(base, key=lambda r: r["auc"])
    best_other = max((r for r in rows if not r["semantic"]), key=lambda r: r["auc"])
    margin = best_sem["auc"] - best_base["auc"]
    met = best_sem["auc"] > best_other["auc"] and margin >= TARGET_MARGIN
    return {"met": bool(met), "best_semantic": best_sem["method"], "best_semantic_auc": best_sem["auc"],
            "best_baseline": best_base["method"], "best_baseline_auc": best_base["auc"],
            "best_other": best_other["method"], "best_other_auc": best_other["auc"], "margin": margin,
            "statement": f"{best_sem['method']} {best_sem['auc']:.3f} vs best baseline {best_base['method']} "
                         f"{best_base['auc']:.3f} (margin {margin:+.3f}, needs ≥ +{TARGET_MARGIN:.2f}); "
                         f"best non-semantic method {best_other['method']} {best_other['auc']:.3f}"}


# --- topology-aware registration rows -------------------------------------------------------------------------------
def _register_mu(fixed: Volume, moving: Volume, size: BenchSize, weights: Volume | None = None) -> torch.Tensor:
    """The engine's displacement (voxels, fixed grid) for two volumes on one grid."""
    from ..registration import preset, register
    from ..transforms.sampling import identity_grid
    reg = register(fixed, moving, preset(size.preset), weights=weights, device="cpu")
    nd = fixed.spatial_ndim
    return reg.moving_coords.float() - identity_grid(fixed.grid_shape)[:, :nd]


def _errors(mu: torch.Tensor, truth: torch.Tensor, lesion: torch.Tensor, brain: torch.Tensor,
            spacing: float) -> dict[str, float]:
    """Mean |μ − u_true| (mm) inside the lesion, in the ring 2–6 voxels around it (in the brain), in the brain."""
    err = ((mu - truth) ** 2).sum(1, keepdim=True).sqrt() * spacing
    ring = dilate(lesion, 6) & ~dilate(lesion, 2) & brain
    return {region: float(err[m].mean()) if bool(m.any()) else float("nan")
            for region, m in (("lesion", lesion), ("ring", ring), ("brain", brain))}


def aware_case(case: TopologyCase, affine: np.ndarray, size: BenchSize) -> dict[str, Any]:
    """Plain vs topology-aware registration of one lesion case (weights = 1 − display map of the training-free
    intensity heatmap, as `toporeg register --topology-aware`)."""
    arr = lambda t: t[0, 0].cpu().numpy().astype(np.float32)  # noqa: E731
    fixed, moving = Volume(arr(case.fixed), affine), Volume(arr(case.moving), affine)
    spacing = float(abs(affine[0, 0]))
    start = time.perf_counter()
    plain = _register_mu(fixed, moving, size)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    topo = topology_heatmap(fixed, moving, TopologySettings(preset=size.preset, iterations=size.iterations),
                            device="cpu")
    weights = Volume(1.0 - np.asarray(topo.display.data, np.float32), affine)
    aware = _register_mu(fixed, moving, size, weights)
    aware_s = time.perf_counter() - start
    args = (case.displacement, case.change_mask, case.brain_mask, spacing)
    return {"kind": case.kind, "plain": {**_errors(plain, *args), "seconds": plain_s},
            "aware": {**_errors(aware, *args), "seconds": aware_s}}


def aware_rows(name: str, cases: Sequence[TopologyCase], affine: np.ndarray, size: BenchSize,
               log: Log) -> dict[str, Any]:
    """Per-case errors and their means for one set of lesion cases."""
    per_case = []
    for i, case in enumerate(cases):
        log(f"[bench] {name} {i + 1}/{len(cases)} (plain vs topology-aware registration) …")
        per_case.append(aware_case(case, affine, size))
    mean = {variant: {k: float(np.nanmean([c[variant][k] for c in per_case])) for k in per_case[0][variant]}
            for variant in ("plain", "aware")} if per_case else {}
    return {"name": name, "cases": len(per_case), "spacing_mm": float(abs(affine[0, 0])), "per_case": per_case,
            "mean": mean}


# --- outputs ------------------------------------------------------------------------------------------------------
def _paper_key(set_name: str) -> str:
    return "cells" if set_name.startswith("cells") else "brain"


def _tick(met: bool | None) -> str:
    return "–" if met is None else ("✔" if met else "✘")


def _set_table(s: dict[str, Any]) -> list[str]:
    lines = [f"## {s['name']}", "", s["description"], "",
             f"{s['subjects']} subjects, {s['scored_voxels']} scored voxels ({s['positive_voxels']} changed); shared "
             f"registration {s['registration_seconds_per_subject']:.1f} s per subject.", "",
             "| method | AUC (pooled) | bootstrap mean ± std | 95 % interval | time per subject (s) |",
             "|---|---|---|---|---|"]
    for r in sorted(s["rows"], key=lambda r: -r["auc"]):
        lines.append(f"| {r['method']} | {r['auc']:.3f} | {format_value(r['mean'], 3)} ± {format_value(r['std'], 3)} | "
                     f"{format_value(r['p2_5'], 3)}–{format_value(r['p97_5'], 3)} | {r['seconds_per_subject']:.2f} |")
    lines += [f"| {m} | failed: {e} | | | |" for m, e in s["errors"].items()]
    paper = ", ".join(f"{k} {v:.2f}" for k, v in PAPER_AUC[_paper_key(s["name"])].items())
    lines += ["", f"Paper reference ({_paper_key(s['name'])}, different data): {paper}.", "",
              f"Target (semantic TopoReg best of all, ≥ +{TARGET_MARGIN:.2f} over the best baseline): "
              f"{_tick(s['target']['met'])} {s['target']['statement']}", ""]
    lines += [f"- note: {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    return lines + [f"![ROC {s['name']}]({PNG_STEM}_roc_{s['name']}.png)", ""]


def _aware_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    spacing = ", ".join(f"{r['name']} {r['spacing_mm']:g} mm" for r in rows)
    lines = ["## Topology-aware registration", "",
             "Lesion cases with mass effect (intra-subject, so the true field is known: nuisance deformation ∘ mass "
             "effect). Plain: `toporeg.registration.register`. Topology-aware: the training-free intensity "
             "heatmap (`topology_heatmap`), then `register(..., weights = 1 − display map)`; its time includes the "
             "heatmap. "
             f"Error: mean |u − u_true| in mm (voxel spacing: {spacing}), inside the lesion, in the ring 2–6 voxels "
             "around it (inside the brain), and over the brain.", "",
             "| set | cases | variant | lesion (mm) | ring (mm) | brain (mm) | time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for variant in ("plain", "aware"):
            m = r["mean"].get(variant)
            if m:
                lines.append(f"| {r['name']} | {r['cases']} | {variant} | {m['lesion']:.2f} | {m['ring']:.2f} | "
                             f"{m['brain']:.2f} | {m['seconds']:.1f} |")
    return lines + [""]


def _paper_table() -> list[str]:
    lines = ["## Reference: the paper's figures (Czolbe et al. 2021; different data, reference only)", "",
             "| data | semantic TopoReg | Li & Wyatt | Jacobian | MSE TopoReg |", "|---|---|---|---|---|"]
    for data, v in PAPER_AUC.items():
        lines.append(f"| {data} | {v['semantic TopoReg']:.2f} | {v['li_wyatt']:.2f} | {v['jacobian']:.2f} | "
                     f"{v['MSE TopoReg']:.2f} |")
    return lines + [""]


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = ["# Topological-change benchmark", "",
             f"- date: {doc['date']}", f"- commit: `{doc['commit']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch device "
             f"{m.get('torch_device', '?')}, {m.get('torch_threads', '?')} torch threads, 15-min load average "
             f"{m.get('load_average_15min', '?')} when written",
             f"- reproduce: `{doc['command']}`", f"- total wall time: {doc['total_seconds']:.0f} s", "",
             "Pixel-wise ROC over the scored voxels of all subjects pooled; error bars: subjects resampled with "
             f"replacement ({doc['size']['n_boot']} bootstrap draws, voxels pooled). Every TopoReg method of a pair "
             "starts from the same engine registration; the baselines use TopoReg optimize-intensity's forward μ "
             "(the same registration, refined by its ELBO fit). TopoReg maps are L_sym(J|I) (pairs) or Q(J) "
             "(outlier set), in nats per voxel. Time per subject: the method's own fitting (both directions; in the "
             "outlier set including the control-set fits, amortised over the tests); the shared registration is "
             "listed once per set.", "", f"![first subject of every set]({PNG_STEM}_examples.png)", "",
             "## Targets", "", "| set | target met | |", "|---|---|---|"]
    lines += [f"| {s['name']} | {_tick(s['target']['met'])} | {s['target']['statement']} |" for s in doc["sets"]]
    lines.append("")
    for s in doc["sets"]:
        lines += _set_table(s)
    if doc["topology_aware"]:
        lines += _aware_table(doc["topology_aware"])
    lines += _paper_table()
    lines += ["## Methods", ""] + [f"- `{k}`: {v}" for k, v in doc["methods"].items()] + [""]
    return "\n".join(lines)


def roc_figure(s: dict[str, Any], path: Path) -> None:
    """Pooled ROC curves of one set, AUC in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for r in sorted(s["rows"], key=lambda r: -r["auc"]):
        style = "-" if r["kind"] == "TopoReg" else "--"
        ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], style, lw=1.5, label=f"{r['method']} ({r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=s["name"], xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, name: str, img: np.ndarray, mask: np.ndarray | None) -> None:
    """Images in grey at their 1–99.5 % range, the truth at 0–1, maps in magma within the scoring mask."""
    is_image = name.startswith(("J ", "I "))
    shown = img if mask is None or is_image or name == "truth" else np.where(mask > 0, img, np.nan)
    lo, hi = (0.0, 1.0) if name == "truth" else np.nanpercentile(shown, [1, 99.5])
    ax.imshow(np.rot90(shown), cmap="gray" if is_image else "magma", vmin=lo, vmax=hi)
    ax.set_title(name.replace("TopoReg ", ""), fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])


def example_figure(sets: Sequence[SetScores], path: Path) -> None:
    """One row per set: the first subject's J, I, true change, and every method's map (3D: the axial slice
    with the largest change)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [s for s in sets if s.example]
    cols = max(len(s.example) - ("mask" in s.example) for s in rows) if rows else 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.1 * len(rows)), squeeze=False)
    for ax_row, s in zip(axes, rows):
        mask = s.example.get("mask")
        items = [(k, v) for k, v in s.example.items() if k != "mask"]
        for ax, (name, img) in zip(ax_row, items):
            _panel(ax, name, img, mask)
        ax_row[0].set_ylabel(s.name, fontsize=8)
        for ax in ax_row[len(items):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], sets: Sequence[SetScores], out_dir: Path) -> list[Path]:
    """Markdown, JSON, one ROC PNG per set and the example panel; written only once everything was computed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / MD_NAME, out_dir / JSON_NAME]
    for s in doc["sets"]:
        paths.append(out_dir / f"{PNG_STEM}_roc_{s['name']}.png")
        roc_figure(s, paths[-1])
    paths.append(out_dir / f"{PNG_STEM}_examples.png")
    example_figure(sets, paths[-1])
    (out_dir / JSON_NAME).write_text(json.dumps(doc, indent=2, default=float, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / MD_NAME).write_text(markdown(doc), encoding="utf-8")
    return paths


# --- the run ------------------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    size: BenchSize
    out: Path
    deepsim: str | None = None
    models: tuple[str, ...] = ()
    seed: int = 0
    cache: Path = DEFAULT_CACHE
    command: str = ""


def _brain_description(ndim: int, templates: Templates) -> str:
    kind = "axial slices near the largest brain slice (± 4)" if ndim == 2 else "volumes"
    return (f"Colin27 / MNI152 {kind} at {templates.spacing_mm:g} mm. J = one subject + an inserted lesion (own "
            "intensity, mass effect), resection cavity or opened/closed ventricle (in turn), random smooth "
            "deformation (≤ 3 voxels) and intensity change (gamma, bias field, noise); I = the other subject "
            "(inter-subject; both directions). Scored in J's brain mask dilated by 2 voxels.")


def _brain_set(opts: RunOptions, templates: Templates, ndim: int, plan: MethodPlan, log: Log) -> SetScores:
    n = opts.size.brain_2d if ndim == 2 else opts.size.brain_3d
    cases = inter_subject_cases(templates, n, ndim, RandomFields(opts.seed * 1000 + (1 if ndim == 2 else 4)))
    return score_pairs(f"brain_{ndim}d", _brain_description(ndim, templates), cases, plan, log)


def _cell_set(opts: RunOptions, plan: MethodPlan, log: Log) -> SetScores:
    size = opts.size
    shape = "×".join(map(str, size.cell_shape))
    out = score_pairs("cells_2d", f"Generated SBEM-like {shape} slice pairs: organelles appearing/disappearing, a "
                      "merged cell wall, smooth deformation ≤ 2 px, noise; scored over the whole image.",
                      cell_cases(size.cells, size.cell_shape, RandomFields(opts.seed * 1000 + 2)), plan, log)
    if len(plan.fitters) > 1:
        out.notes.append("the DeepSim extractor and the learned topology models were trained on brain MRI slices: "
                         "cell images are outside their training domain (no cell-trained model exists here)")
    return out


def _outlier_set(opts: RunOptions, templates: Templates, plan: MethodPlan, log: Log) -> SetScores:
    size = opts.size
    groups = outlier_groups(templates, size.controls, size.tests, RandomFields(opts.seed * 1000 + 3))
    return score_outlier("outlier_2d", f"{size.tests} lesion test slices (one subject, deformed, re-contrasted) "
                         f"against {size.controls} healthy control slices of the OTHER subject (deformed, "
                         "re-contrasted), both directions. TopoReg: Q(J); baselines: test map minus the control-set "
                         "mean map (outlier_adjusted). Scored in J's dilated brain mask.", groups, plan, log)


def run_sets(opts: RunOptions, templates: Templates, log: Log) -> tuple[list[SetScores], list[dict], dict]:
    """Every set; returns (scores, summaries, the methods' notes). Both plans are built first, so every model is
    resolved and loaded before the long part starts (a weights file replaced mid-run cannot break it)."""
    plan2 = plan_methods(2, templates.affine, opts.size, opts.deepsim, opts.models)
    plan3 = plan_methods(3, templates.affine, opts.size, opts.deepsim, opts.models) if opts.size.brain_3d else None
    sets = [_brain_set(opts, templates, 2, plan2, log), _cell_set(opts, plan2, log),
            _outlier_set(opts, templates, plan2, log)]
    methods = {f.name: f.note for f in plan2.fitters}
    if plan3 is not None:
        sets.append(_brain_set(opts, templates, 3, plan3, log))
        methods.update({f"{f.name} (3D)": f.note for f in plan3.fitters if f.name not in methods})
    return sets, [summarise(s, opts.size.n_boot, opts.seed) for s in sets], methods


def run_aware(opts: RunOptions, templates: Templates, log: Log) -> list[dict[str, Any]]:
    size, rows = opts.size, []
    for ndim, n in ((2, size.aware_2d), (3, size.aware_3d)):
        if n <= 0:
            continue
        rng = RandomFields(opts.seed * 1000 + 10 + ndim)
        cases = [brain_cases(*templates.arrays[SUBJECTS[i % 2]], 1, ndim, rng, ("lesion",))[0] for i in range(n)]
        rows.append(aware_rows(f"lesion_{ndim}d", cases, templates.affine, size, log))
    return rows


def run_benchmark(opts: RunOptions, log: Log | None = None) -> dict[str, Any]:
    """The whole benchmark; writes the outputs into opts.out and returns the JSON document."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    templates = load_templates(opts.cache, opts.size.downsample)
    sets, summaries, methods = run_sets(opts, templates, log)
    aware = run_aware(opts, templates, log)
    methods.update({b: _baseline_note(b, "") for b in BASELINES})
    doc = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_commit(),
           "machine": machine(), "command": opts.command, "total_seconds": time.perf_counter() - start,
           "size": vars(opts.size), "seed": opts.seed, "methods": methods, "sets": summaries,
           "topology_aware": aware, "paper_reference_auc": PAPER_AUC, "target_margin": TARGET_MARGIN}
    for path in write_outputs(doc, sets, opts.out):
        log(f"[bench] wrote {path}")
    return doc


# --- command line -------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporeg bench topology", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/benchmarks", help="output folder (created if missing)")
    p.add_argument("--quick", action="store_true", help="tiny run (4 mm templates, 2 subjects, few iterations)")
    p.add_argument("--deepsim-model", help="DeepSim extractor (name or .safetensors) for optimize-semantic")
    p.add_argument("--model", nargs="+", action="extend", default=[], metavar="NAME_OR_PATH",
                   help="trained topology model(s); default: every catalogued topology model of the right dimension")
    p.add_argument("--subjects", type=int, help="2D cases per direction / cell pairs / outlier tests")
    p.add_argument("--subjects-3d", type=int, help="3D cases per direction (0: no 3D set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="template cache (.npz)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (QUICK if args.quick else FULL).with_subjects(args.subjects, args.subjects_3d)
    opts = RunOptions(size, Path(args.out), args.deepsim_model, tuple(args.model), args.seed, args.cache,
                      "toporeg bench topology " + shlex.join(argv))
    try:
        run_benchmark(opts)
    except KeyboardInterrupt:
        print("[bench] cancelled: no outputs written", file=sys.stderr)
        return 130
    print(Path(args.out) / MD_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
