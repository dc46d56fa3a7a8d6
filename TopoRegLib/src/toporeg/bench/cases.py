"""Registration cases with known answers, built from public data that installs offline, cached on disk.

Synthetic cases are exact by construction: for a random smooth velocity field v, the moving image is
the fixed image pulled back by exp(−v), so the true mapping is φ = exp(v):
moving(φ(x)) = fixed(exp(−v)(exp(v)(x))) = fixed(x). Intensity changes (gamma, bias, Rician noise) are
applied to the moving image afterwards so that no method can win by plain intensity matching.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..geometry import resample_to, resample_to_spacing
from ..io import Volume, load_volume, save_volume
from ..transforms.fields import physical_displacement, voxel_displacement_from_physical
from ..transforms.integration import integrate_svf
from ..transforms.sampling import identity_grid, warp, warp_labels
from . import landmarks as lm

CACHE_VERSION = "v2"
SPACING_MM = 2.0
MRICRON = Path(os.environ.get("TOPOREG_MRICRON", "/usr/share/mricron/templates"))


@dataclass
class Case:
    """One fixed/moving pair with what scores it; `gt_u_ras` is the true x_moving − x_fixed on the fixed grid."""
    name: str
    fixed: Volume
    moving: Volume
    fixed_labels: Volume
    moving_labels: Volume
    gt_u_ras: np.ndarray | None = None
    fixed_mask: Volume | None = None
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    description: str = ""


# --- random smooth diffeomorphisms and intensity changes ------------------------------------------------
def smooth_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """(channels, *shape) Gaussian-smoothed white noise, each channel scaled to max |value| = 1."""
    from scipy.ndimage import gaussian_filter

    out = np.stack([gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="reflect") for _ in range(channels)])
    return out / np.abs(out).max(axis=tuple(range(1, out.ndim)), keepdims=True)


def exp_field(velocity_vox: np.ndarray) -> torch.Tensor:
    """(1, 3, *S) voxel displacement of exp(v) for a (3, *S) voxel velocity."""
    return integrate_svf(torch.as_tensor(velocity_vox[None], dtype=torch.float32), steps=7)


def scale_to_max_displacement(velocity_vox: np.ndarray, fixed: Volume, max_mm: float,
                              mask: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """Rescale v so that exp(v) moves no voxel (inside `mask`) further than `max_mm`."""
    v = velocity_vox.copy()
    for _ in range(rounds):
        u = physical_displacement(identity_grid(fixed.grid_shape) + exp_field(v), fixed.affine, fixed.affine)
        norm = np.linalg.norm(u, axis=-1)
        peak = float(norm[mask].max() if mask is not None else norm.max())
        v *= max_mm / max(peak, 1e-6)
    return v


def change_intensity(data: np.ndarray, rng: np.random.Generator, spacing: np.ndarray, *, gamma: float = 0.8,
                     bias: float = 0.15, noise: float = 0.02) -> np.ndarray:
    """Gamma contrast change, smooth multiplicative bias field (±`bias`), Rician noise (σ = `noise`·p99.5)."""
    scale = float(np.percentile(data, 99.5)) or 1.0
    x = np.clip(data / scale, 0, None) ** gamma
    b = smooth_noise(data.shape, 40.0 / float(np.mean(spacing)), rng, channels=1)[0]
    x = x * np.exp(bias * b)
    x = np.sqrt((x + noise * rng.standard_normal(x.shape)) ** 2 + (noise * rng.standard_normal(x.shape)) ** 2)
    return (x * scale).astype(np.float32)


def synthetic_case(name: str, fixed: Volume, fixed_labels: Volume, velocity_vox: np.ndarray, *,
                   fixed_mask: Volume | None = None, seed: int = 0, intensity: bool = True,
                   description: str = "") -> Case:
    """moving = fixed ∘ exp(−v) (+ intensity changes); ground truth u = exp(v) in RAS mm."""
    rng = np.random.default_rng(seed)
    inverse = exp_field(-velocity_vox)
    image = torch.as_tensor(fixed.data[None, None], dtype=torch.float32)
    moving_data = warp(image, inverse)[0, 0].numpy()
    labels = torch.as_tensor(fixed_labels.data[None, None].astype(np.int64))
    moving_labels = warp_labels(labels, inverse)[0, 0].numpy().astype(fixed_labels.data.dtype)
    if intensity:
        moving_data = change_intensity(moving_data, rng, fixed.spacing)
    gt = physical_displacement(identity_grid(fixed.grid_shape) + exp_field(velocity_vox), fixed.affine, fixed.affine)
    return Case(name, fixed, fixed.with_data(moving_data.astype(np.float32), is_label=False), fixed_labels,
                fixed_labels.with_data(moving_labels, is_label=True), gt.astype(np.float32), fixed_mask,
                description=description)


# --- source images ----------------------------------------------------------------------------------------
def _package_file(package: str, *parts: str) -> Path:
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def _z_ras(volume: Volume) -> np.ndarray:
    ijk = np.indices(volume.grid_shape).reshape(3, -1).T
    return volume.voxel_to_ras(ijk)[:, 2].reshape(volume.grid_shape)


def colin27(spacing: float = SPACING_MM) -> tuple[Volume, Volume, Volume]:
    """Colin27 whole-head T1, AAL labels (nearest) and its BET brain mask, at `spacing` mm."""
    t1 = resample_to_spacing(load_volume(MRICRON / "ch2.nii.gz", is_label=False).astype(np.float32), spacing)
    aal = resample_to(load_volume(MRICRON / "aal.nii.gz", is_label=True), t1, interpolation="nearest")
    bet = load_volume(MRICRON / "ch2bet.nii.gz", is_label=False).astype(np.float32)
    mask = resample_to(bet.with_data((bet.data > 0).astype(np.float32)), t1).data > 0.5
    return t1, aal, t1.with_data(mask.astype(np.uint8), is_label=True)


def mni152_tissue() -> tuple[Volume, Volume, Volume]:
    """ICBM152 2009a T1 (2 mm, skull-stripped) and CSF/GM/WM labels 1/2/3 (CSF = mask − GM − WM)."""
    from nilearn import datasets

    def vol(img) -> Volume:
        return Volume(np.asarray(img.get_fdata(), np.float32), img.affine)

    t1 = vol(datasets.load_mni152_template(resolution=2))
    try:
        from ..data.resources import sample_path
        labels = load_volume(sample_path("mni152_tissue_2mm.nii.gz"), is_label=True)
        labels = resample_to(labels, t1, interpolation="nearest")
    except Exception:  # noqa: BLE001 - bundled map not built yet: derive it the same way here
        gm = vol(datasets.load_mni152_gm_template(resolution=2)).data
        wm = vol(datasets.load_mni152_wm_template(resolution=2)).data
        brain = vol(datasets.load_mni152_brain_mask(resolution=2)).data > 0.5
        probs = np.stack([np.clip(1.0 - gm - wm, 0, 1), gm, wm])
        labels = t1.with_data(np.where(brain, np.argmax(probs, 0) + 1, 0).astype(np.uint8), is_label=True)
    mask = t1.with_data((labels.data > 0).astype(np.uint8), is_label=True)
    return t1, labels, mask


def fsl_velocity(fixed: Volume, mask: np.ndarray) -> np.ndarray:
    """nitransforms' real inter-subject FNIRT field, box-fitted onto `fixed`'s brain, as a voxel velocity shape.

    The file (intent 2006, FNIRT displacement field) holds relative displacements in mm in FSL's
    coordinates, whose x axis is flipped for a neurological (det > 0) affine; nitransforms'
    `FSLDisplacementsField.from_image` negates x to get RAS mm, and so do we. Its grid does not overlap
    Colin's world space, so the field's support box is mapped onto the fixed brain's bounding box (per-axis
    scaling, vector components scaled alike). Only its shape is used: the caller rescales it and
    integrates it as a stationary velocity, which keeps the map invertible.
    """
    import nibabel as nib
    from scipy.ndimage import gaussian_filter, map_coordinates

    img = nib.load(str(_package_file("nitransforms", "tests", "data", "ds-005_sub-01_from-OASIS_to-T1_warp_fsl.nii.gz")))
    field = np.asarray(img.get_fdata(), np.float64).reshape(img.shape[:3] + (3,))
    field[..., 0] *= -1.0  # FSL → RAS (det > 0 affine)
    support = np.argwhere(np.linalg.norm(field, axis=-1) > 0.5)
    f_lo, f_hi = support.min(0).astype(float), support.max(0).astype(float)  # field voxels
    brain = np.argwhere(mask)
    b_lo, b_hi = brain.min(0).astype(float), brain.max(0).astype(float)  # fixed voxels
    ijk = np.indices(fixed.grid_shape).astype(float)
    frac = (ijk - b_lo[:, None, None, None]) / (b_hi - b_lo)[:, None, None, None]
    src = f_lo[:, None, None, None] + frac * (f_hi - f_lo)[:, None, None, None]
    comps = [map_coordinates(field[..., c], src, order=1, mode="constant") for c in range(3)]
    stretch = (b_hi - b_lo) * fixed.spacing / ((f_hi - f_lo) * np.abs(np.diag(img.affine)[:3]))
    u_ras = np.stack(comps, -1) * stretch
    v = voxel_displacement_from_physical(u_ras, fixed.affine, 3)
    return np.stack([gaussian_filter(c, 1.0) for c in v])


# --- the benchmark's cases --------------------------------------------------------------------------------
def colin_random(max_mm: float = 6.0, seed: int = 1) -> Case:
    t1, aal, mask = colin27()
    v = smooth_noise(t1.grid_shape, 12.0 / SPACING_MM, np.random.default_rng(seed))
    v = scale_to_max_displacement(v, t1, max_mm, mask.data > 0)
    return synthetic_case("colin_random", t1, aal, v, fixed_mask=mask, seed=seed, description=(
        f"Colin27 T1 + AAL at 2 mm; moving = fixed ∘ exp(−v), random smooth SVF (σ 12 mm, max |u| {max_mm} mm "
        "in the brain), gamma 0.8, ±15 % bias, 2 % Rician noise"))


def colin_fsl(max_mm: float = 8.0, seed: int = 2) -> Case:
    t1, aal, mask = colin27()
    v = scale_to_max_displacement(fsl_velocity(t1, mask.data > 0), t1, max_mm, mask.data > 0)
    return synthetic_case("colin_fsl", t1, aal, v, fixed_mask=mask, seed=seed, description=(
        f"Colin27 T1 + AAL at 2 mm; true field = exp(v), v = nitransforms' real FNIRT inter-subject field "
        f"box-fitted to Colin's brain, max |u| {max_mm} mm; same intensity changes"))


def mni_random(max_mm: float = 6.0, seed: int = 3) -> Case:
    t1, labels, mask = mni152_tissue()
    v = smooth_noise(t1.grid_shape, 12.0 / SPACING_MM, np.random.default_rng(seed))
    v = scale_to_max_displacement(v, t1, max_mm, mask.data > 0)
    return synthetic_case("mni_random", t1, labels, v, fixed_mask=mask, seed=seed, description=(
        f"ICBM152 2009a (skull-stripped) + CSF/GM/WM at 2 mm; random smooth SVF, max |u| {max_mm} mm; "
        "same intensity changes"))


def colin_pydeface() -> Case:
    """Real inter-head pair: Colin27 (fixed) ↔ pydeface's mean head (moving), scored by brain-mask Dice and landmarks."""
    t1, _, bet = colin27()
    colin_mask = (bet.data > 0) & (_z_ras(t1) > lm.COLIN27_CUT_Z)
    src = load_volume(_package_file("pydeface", "data", "mean_reg2mean.nii.gz"), is_label=False)
    head = resample_to_spacing(src.astype(np.float32), SPACING_MM)
    head_mask = lm.rough_brain_mask(head.data, _z_ras(head), lm.PYDEFACE_CUT_Z)
    fixed_labels = t1.with_data(colin_mask.astype(np.uint8), is_label=True)
    return Case("colin_pydeface", t1, head, fixed_labels, head.with_data(head_mask.astype(np.uint8), is_label=True),
                None, fixed_labels, lm.COLIN27_RAS.copy(), lm.PYDEFACE_MEAN_RAS.copy(), description=(
                    "real pair: Colin27 whole head (fixed) ↔ pydeface mean whole head (moving), 2 mm; brain-mask "
                    "Dice (Colin: ch2bet; mean head: rough threshold+morphology mask; both cut 20 mm below the "
                    "fourth-ventricle fastigium) and 6 hand-placed landmarks (bench/landmarks.py)"))


CASES: dict[str, Callable[[], Case]] = {
    "colin_random": colin_random, "colin_fsl": colin_fsl, "mni_random": mni_random, "colin_pydeface": colin_pydeface,
}


# --- on-disk cache ----------------------------------------------------------------------------------------
def cache_root() -> Path:
    """`$TOPOREG_BENCH_CACHE`, else `.bench-cache/` at the repository root, else ~/.cache/toporeg/bench."""
    env = os.environ.get("TOPOREG_BENCH_CACHE")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "TopoRegLib").is_dir():
            return parent / ".bench-cache"
    return Path.home() / ".cache" / "toporeg" / "bench"


_VOLUMES = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_mask")


def save_case(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key in _VOLUMES:
        vol = getattr(case, key)
        if vol is not None:
            save_volume(vol, folder / f"{key}.nii.gz")
    if case.gt_u_ras is not None:
        np.save(folder / "gt_u_ras.npy", case.gt_u_ras.astype(np.float32))
    meta = {"name": case.name, "description": case.description,
            "fixed_landmarks": None if case.fixed_landmarks is None else case.fixed_landmarks.tolist(),
            "moving_landmarks": None if case.moving_landmarks is None else case.moving_landmarks.tolist()}
    # written last: marks a complete case
    (folder / "case.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_case(folder: Path) -> Case:
    meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    vols = {}
    for key in _VOLUMES:
        path = folder / f"{key}.nii.gz"
        vols[key] = load_volume(path, is_label=key != "fixed" and key != "moving") if path.exists() else None
    gt = np.load(folder / "gt_u_ras.npy") if (folder / "gt_u_ras.npy").exists() else None
    pts = {k: None if meta[k] is None else np.asarray(meta[k], float) for k in ("fixed_landmarks", "moving_landmarks")}
    return Case(meta["name"], gt_u_ras=gt, description=meta["description"], **vols, **pts)


def load_case(name: str, *, rebuild: bool = False, cache: Path | None = None) -> Case:
    """The named case, from the cache when built before (same CACHE_VERSION), else built and cached."""
    if name not in CASES:
        raise KeyError(f"unknown case '{name}' (known: {', '.join(CASES)})")
    folder = (cache or cache_root()) / "cases" / CACHE_VERSION / name
    if not rebuild and (folder / "case.json").exists():
        return read_case(folder)
    case = CASES[name]()
    save_case(case, folder)
    return case


def load_cases(names: list[str] | None = None, **kw) -> list[Case]:
    return [load_case(n, **kw) for n in (names or list(CASES))]
