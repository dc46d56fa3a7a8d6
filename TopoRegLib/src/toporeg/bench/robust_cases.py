"""2D cases and the shared run loop of `toporeg bench dio` and `toporeg bench carl`.

Cases: axial 2 mm slices of the two templates the 2D models were trained on (ICBM152 2009a with CSF/GM/WM,
Colin27 skull-stripped by its BET mask with AAL labels), so "in-domain" means the training templates under a new
random deformation, not unseen subjects. Moving = fixed ∘ exp(−v) for a random smooth SVF (`cases.synthetic_case`,
max |u| 6 mm in the brain) with gamma, bias and Rician noise; variants change only the moving image: thick slices
(2 × 6 mm), a T2-like contrast, or the content rigidly moved / scaled about the image centre on the same grid.
Every method is a callable Case → PeerResult, scored by `registration.score` (Dice of the moving labels pulled
through its RAS-mm field, p95 error against the known field, folding % in the fixed brain, wall seconds).
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..geometry import resample_to, resample_to_spacing
from ..geometry.padding import pad_or_crop_to
from ..io import Volume
from ..methods import MethodOptions, register_with_method
from ..registration import RegistrationSettings, preset
from .cases import (SPACING_MM, Case, colin27, mni152_tissue, scale_to_max_displacement, smooth_noise,
                    synthetic_case)
from .peers import Measure, PeerResult
from .registration import score

SLICES_Z_MM = (16.0, 0.0, 32.0)   # axial positions (RAS z): ventricles, basal ganglia, centrum semiovale
MAX_MM, SIGMA_MM = 6.0, 12.0
T2_LEVELS = (0.0, 1.0, 0.55, 0.3)  # background, CSF, GM, WM: CSF bright, WM dark
CaseMethod = Callable[[Case], PeerResult]
Log = Callable[[str], None]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RobustCase:
    case: Case                # the in-domain pair
    velocity: np.ndarray      # (2, *S) voxel SVF of the true map
    tissue: Volume            # fixed CSF/GM/WM (1/2/3), for the contrast change
    seed: int


# --- templates and slices ------------------------------------------------------------------------------------
def _mni152() -> tuple[Volume, Volume, Volume, Volume]:
    t1, tissue, mask = mni152_tissue()
    return t1, tissue, mask, tissue


def _colin27() -> tuple[Volume, Volume, Volume, Volume]:
    from ..training.dataset_cache import _kmeans_tissue  # the same derived Colin tissue as the training cache

    t1, aal, mask = colin27()
    brain = mask.data > 0
    t1 = t1.with_data(t1.data * brain)
    return t1, aal, mask, mask.with_data(_kmeans_tissue(t1.data, brain))


# name → () -> (skull-stripped T1, scoring labels, brain mask, tissue 1/2/3), 3D at 2 mm, canonical RAS
TEMPLATES: dict[str, Callable[[], tuple[Volume, Volume, Volume, Volume]]] = {"mni152": _mni152, "colin27": _colin27}


def axial_slice(volume: Volume, z_mm: float, margin_vox: int = 0) -> Volume:
    """The 2D volume (data [i, j]) of the axial slice nearest RAS z, zero-padded by `margin_vox` in-plane."""
    k = int(round(volume.ras_to_voxel(np.array([[0.0, 0.0, z_mm]]))[0, 2]))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_ras(np.array([0.0, 0.0, k]))
    out = Volume(volume.data[:, :, k], affine, is_label=volume.is_label)
    return pad_or_crop_to(out, tuple(n + 2 * margin_vox for n in out.grid_shape))[0] if margin_vox else out


def base_cases(n: int, *, margin_vox: int = 0, seed: int = 0) -> list[RobustCase]:
    """n pairs, alternating templates, then slices (z 16, 0, 32 mm); new random field per case."""
    names = list(TEMPLATES)
    tpl = {k: TEMPLATES[k]() for k in names[:n]}  # only the templates used
    out = []
    for i in range(n):
        name, z = names[i % 2], SLICES_Z_MM[(i // 2) % len(SLICES_Z_MM)]
        fixed, labels, mask, tissue = (axial_slice(v, z, margin_vox) for v in tpl[name])
        s = seed * 1000 + i
        v = smooth_noise(fixed.grid_shape, SIGMA_MM / SPACING_MM, np.random.default_rng(s), channels=2)
        v = scale_to_max_displacement(v, fixed, MAX_MM, mask.data > 0)
        label_kind = "CSF/GM/WM" if name == "mni152" else "AAL"
        case = synthetic_case(f"{name}_z{z:+.0f}_s{s}", fixed, labels, v, fixed_mask=mask, seed=s, description=(
            f"{name} axial slice z = {z:+.0f} mm (2 mm, skull-stripped, {label_kind} labels); moving = fixed ∘ "
            f"exp(−v), random smooth SVF (σ {SIGMA_MM:.0f} mm, max |u| {MAX_MM:.0f} mm), gamma 0.8, ±15 % bias, "
            "2 % Rician noise"))
        out.append(RobustCase(case, v, tissue, s))
    return out


# --- variants of the moving image -------------------------------------------------------------------------
def anisotropic(rc: RobustCase, thick_mm: float = 6.0, axis: int = 1) -> Case:
    """The moving image as thick slices: box-averaged over `thick_mm` along `axis`, sampled every `thick_mm`."""
    from scipy.ndimage import uniform_filter1d

    m = rc.case.moving
    size = int(round(thick_mm / m.spacing[axis]))
    spacing = m.spacing.copy()
    spacing[axis] = thick_mm
    thick = resample_to_spacing(m.with_data(uniform_filter1d(m.data, size, axis=axis)), spacing)
    shape = "×".join(f"{s:g}" for s in spacing[:2])
    return replace(rc.case, moving=thick, description=rc.case.description + f"; moving resampled to {shape} mm "
                   "(thick slices)")


def t2_like(rc: RobustCase) -> Case:
    """The moving image with a T2-like contrast: per-tissue levels (CSF bright, GM mid, WM dark), blurred by 1
    voxel for partial volume, scaled to the T1's range, then the same field and intensity changes."""
    from scipy.ndimage import gaussian_filter

    fixed = rc.case.fixed
    levels = np.asarray(T2_LEVELS)[rc.tissue.data.astype(int)] * float(np.percentile(fixed.data, 99.5))
    source = fixed.with_data(gaussian_filter(levels, 1.0).astype(np.float32) * (rc.case.fixed_mask.data > 0))
    moving = synthetic_case("t2", source, rc.case.fixed_labels, rc.velocity, seed=rc.seed).moving
    return replace(rc.case, moving=moving, description=rc.case.description + "; moving contrast T2-like "
                   f"(CSF/GM/WM levels {T2_LEVELS[1:]}, blur 1 voxel)")


def similarity_ras(fixed: Volume, translation_mm=(0.0, 0.0), angle_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """4×4 RAS map y ↦ c + s·R(y − c) + t in the slice plane, c = the grid centre."""
    c = fixed.voxel_to_ras((np.array(fixed.spatial_shape + (1,) * (3 - len(fixed.spatial_shape))) - 1) / 2.0)
    a = np.radians(angle_deg)
    m = np.eye(4)
    m[:2, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m[:3, 3] = c - m[:3, :3] @ c + np.r_[translation_mm, 0.0]
    return m


def moved(case: Case, s: np.ndarray, label: str) -> Case:
    """Moving content mapped by the RAS similarity `s` on its own grid (zeros outside); the true field follows:
    u'(x) = S(x + u(x)) − x."""
    inv = np.linalg.inv(s)
    moving = resample_to(case.moving, case.moving, transform=inv)
    labels = resample_to(case.moving_labels, case.moving_labels, transform=inv)
    gt = None
    if case.gt_u_ras is not None:
        ijk = np.indices(case.fixed.grid_shape).reshape(case.fixed.spatial_ndim, -1).T
        x = case.fixed.voxel_to_ras(np.c_[ijk, np.zeros((len(ijk), 3 - ijk.shape[1]))]).reshape(case.gt_u_ras.shape)
        p = x + case.gt_u_ras
        gt = (p @ s[:3, :3].T + s[:3, 3] - x).astype(np.float32)
    return replace(case, moving=moving, moving_labels=labels, gt_u_ras=gt,
                   description=case.description + f"; moving content {label}")


# --- methods and the run loop --------------------------------------------------------------------------------
def model_info(method: str, name: str | None) -> tuple[str, dict[str, Any]]:
    """(weights path with its training steps, card) of the 2D model `method` would use for `name`."""
    from ..methods import model_for
    from ..models.weights import read_card

    path = model_for(method, 2, name)
    card = read_card(path)
    return f"{path} ({(card.get('training') or {}).get('iterations', '?')} training steps)", card


def toporeg_method(method: str, options: MethodOptions | None = None, settings: RegistrationSettings | None = None,
                   note: str = "") -> CaseMethod:
    """`register_with_method` on a case (fixed brain mask given, CPU), timed with `Measure`."""
    settings = settings or preset("default")

    def run(case: Case) -> PeerResult:
        with Measure() as m:
            r = register_with_method(method, case.fixed, case.moving, settings, options or MethodOptions(),
                                     fixed_mask=case.fixed_mask, device="cpu")
        return PeerResult(r.displacement_ras, m.seconds, m.peak_mb, note or method, r.warped)
    return run


def run_case(case: Case, name: str, method: CaseMethod, condition: str, say: Log = log,
             keep_field: bool = False) -> dict[str, Any]:
    """One scored row; a failing method gives a row with `error` instead of sinking the run."""
    say(f"[bench] {condition} · {case.name} · {name} …")
    row: dict[str, Any] = {"condition": condition, "case": case.name, "method": name}
    try:
        result = method(case)
        row.update(score(case, result))
        if keep_field:
            row["u_ras"] = result.u_ras
        say(f"[bench]   Dice {row['dice']:.3f}  folding {row['folding_percent']:.3f} %  {row['seconds']:.1f} s")
    except Exception as exc:  # noqa: BLE001 - one failing method must not sink the run
        row["error"] = f"{type(exc).__name__}: {exc}"
        say(f"[bench]   FAILED {row['error']}\n{traceback.format_exc()}")
    return row


def warm_up(case: Case, methods: dict[str, CaseMethod], say: Log = log) -> None:
    """One untimed call per method (model loading, first-call allocations), so timings compare steady states."""
    for name, method in methods.items():
        say(f"[bench] warm-up · {name}")
        try:
            method(case)
        except Exception:  # noqa: BLE001 - reported by the timed run
            pass


def run_all(conditions: dict[str, list[Case]], methods: dict[str, CaseMethod], say: Log = log) -> list[dict[str, Any]]:
    """Every method on every case of every condition (after one warm-up call each)."""
    warm_up(next(iter(conditions.values()))[0], methods, say)
    return [run_case(case, name, method, condition, say)
            for condition, cases in conditions.items() for case in cases for name, method in methods.items()]
