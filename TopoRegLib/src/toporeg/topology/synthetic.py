"""Synthetic topological changes with exact change masks: the data of `toporeg bench topology` (issue #5).

Every generator takes torch tensors (1, 1, *S) or numpy arrays (*S), 2D or 3D, returns torch tensors (1, 1, *S)
(masks bool), and draws all its randomness from one seeded `RandomFields` (the training augmenters' RNG; an int
seed is accepted), so a seed fixes a case. Intensities are assumed in [0, 1] (the template cache's normalisation).

A change mask marks every voxel whose content was *replaced*: outside it, and without deformation, the output is
bit-identical to the input. A pair is fixed J = changed image, deformed and with new intensities, and moving I =
the original (shared/CONVENTIONS.md: J(x) = changed(x + u(x)), displacements in voxels); the mask follows the
deformation onto the fixed grid by a linear warp thresholded at 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..filters import box_mean
from ..training.dataset_cache import TEMPLATES, load_cache
from ..training.synth import RandomFields
from ..training.templates import percentile_normalise_torch
from ..transforms.integration import compose, integrate_svf
from ..transforms.sampling import identity_grid, resize_displacement, warp

Rng = RandomFields | int
Range = float | tuple[float, float]
BRAIN_KINDS = ("lesion", "resection", "ventricle")


# --- small helpers ------------------------------------------------------------------------------------------
def as_rng(rng: Rng) -> RandomFields:
    """An int seeds a fresh CPU `RandomFields`; a `RandomFields` is used (and advanced) as is."""
    return rng if isinstance(rng, RandomFields) else RandomFields(int(rng))


def _image(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 1, *S) float32 from (*S) or (1, 1, *S), numpy or torch."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device, torch.float32)
    return t[None, None] if t.dim() in (2, 3) else t


def _mask(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return _image(x, device) > 0


def _range(value: Range) -> tuple[float, float]:
    return (float(value), float(value)) if np.isscalar(value) else (float(value[0]), float(value[1]))


def _chance(rng: RandomFields, p: float) -> bool:
    return rng.scalar(0.0, 1.0) < p


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2r+1)^d box (max pooling); r = 0 is the identity."""
    if radius <= 0:
        return mask
    pool = F.max_pool2d if mask.dim() == 4 else F.max_pool3d
    return pool(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return ~dilate(~mask, radius)


def _warp_mask(mask: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """mask∘(id + u) by a linear warp thresholded at 0.5 (untouched when u = 0)."""
    return warp(mask.float(), displacement) > 0.5 if bool(displacement.any()) else mask


def _depth(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Fraction of the (2r+1)^d box around each voxel inside the mask: 1 deeper than r, ≈ 0.5 on the boundary.
    A distance-to-boundary proxy at O(1) cost per voxel whatever r (cumulative-sum box filter)."""
    return box_mean(mask.float(), 2 * max(int(round(radius)), 1) + 1)


def _norm(field: torch.Tensor) -> torch.Tensor:
    """(1, 1, *S) Euclidean norm over channels (faster than Tensor.norm(dim=1) on large grids)."""
    return (field**2).sum(1, keepdim=True).sqrt()


def _random_voxel(candidates: torch.Tensor, rng: RandomFields, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """(ndim,) float index of a uniformly drawn voxel of `candidates` (or of `fallback` when that is empty)."""
    idx = candidates[0, 0].nonzero()
    if len(idx) == 0 and fallback is not None:
        idx = fallback[0, 0].nonzero()
    if len(idx) == 0:
        raise ValueError("no voxel to place the change in (empty mask)")
    return idx[int(rng.randint(0, len(idx), ()))].float()


def random_blob(shape: Sequence[int], centre: torch.Tensor, radius: float, rng: Rng,
                irregularity: float = 0.3) -> torch.Tensor:
    """(1, 1, *shape) bool irregular blob: |x − c| / r < 1 − irregularity·n(x), n smooth noise clipped to ±2.5.

    The clip keeps the centre inside for irregularity < 0.4, so a blob is never empty."""
    rng = as_rng(rng)
    grid = identity_grid(tuple(shape), device=rng.device)
    dist = _norm(grid - centre.to(rng.device).view(1, -1, *([1] * len(shape)))) / radius
    noise = rng.smooth_noise(1, 1, tuple(shape), max(0.8 * radius, 2.0)).clamp(-2.5, 2.5)
    return dist < 1.0 - irregularity * noise


def _texture(shape: Sequence[int], rng: RandomFields, amplitude: float, spacing: float = 3.0) -> torch.Tensor:
    return amplitude * rng.smooth_noise(1, 1, tuple(shape), spacing)


def _fill(image: torch.Tensor, region: torch.Tensor, value: float | torch.Tensor, rng: RandomFields,
          texture: float = 0.02) -> torch.Tensor:
    """`image` with `region` replaced by `value` plus a faint smooth texture (real fluid/tissue is never flat)."""
    values = (value + _texture(image.shape[2:], rng, texture)).clamp(0.0, 1.0)
    return torch.where(region, values, image)


def _quantile(image: torch.Tensor, region: torch.Tensor, q: float) -> float:
    values = image[region]
    return float(torch.quantile(values, q)) if values.numel() else float(torch.quantile(image.flatten(), q))


def fluid_value(image: torch.Tensor, brain: torch.Tensor, tissue: torch.Tensor | None = None) -> float:
    """CSF-like intensity: the 10th percentile of CSF (tissue label 1) voxels, else the 2nd percentile in the brain.

    A low percentile, not the mean: template CSF labels are mostly partial-volume sulci brighter than fluid."""
    if tissue is not None and bool((tissue == 1).any()):
        return _quantile(image, tissue == 1, 0.10)
    return _quantile(image, brain, 0.02)


# --- topological changes --------------------------------------------------------------------------------------
def mass_effect_field(shape: Sequence[int], centre: torch.Tensor, amplitude: float, scale: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, D, *S) u(x) = −A (x − c) exp(−|x − c|² / 2s²): a pull-back that pushes tissue away from c.

    The radial map r ↦ r(1 − A g(r)) is increasing for A < 1, so the field is invertible (no folding)."""
    if not 0.0 <= amplitude < 1.0:
        raise ValueError("mass-effect amplitude must be in [0, 1) to stay invertible")
    grid = identity_grid(tuple(shape), device=device)
    offset = grid - centre.to(grid.device).view(1, -1, *([1] * len(shape)))
    gauss = torch.exp(-(offset**2).sum(1, keepdim=True) / (2.0 * scale**2))
    return -amplitude * offset * gauss


def _lesion_values(shape: Sequence[int], mask: torch.Tensor, rng: RandomFields, intensity: Range | None,
                   rim: bool | None) -> torch.Tensor:
    """Lesion content: a dark (cyst/necrosis-like) or bright core with texture, optionally a contrasting rim."""
    if intensity is None:
        core = rng.scalar(0.05, 0.3) if _chance(rng, 0.5) else rng.scalar(0.85, 1.0)
    else:
        core = rng.scalar(*_range(intensity))
    values = core + _texture(shape, rng, 0.05)
    with_rim = rim if rim is not None else _chance(rng, 0.5)
    if with_rim:
        ring = mask & ~_erode(mask, 1)
        values = torch.where(ring, torch.full_like(values, 0.95 if core < 0.5 else 0.15), values)
    return values.clamp(0.0, 1.0)


def insert_lesion(image: torch.Tensor | np.ndarray, brain_mask: torch.Tensor | np.ndarray, rng: Rng, *,
                  radius: Range = (3.0, 8.0), intensity: Range | None = None, rim: bool | None = None,
                  mass_effect: Range = (0.2, 0.5), irregularity: float = 0.3
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A new lesion: irregular blob (radius in voxels) with its own intensity, pushing the tissue around it outward.

    Returns (new_image, change_mask, mass_effect_displacement): new_image = image∘(id + u) outside the mask (u the
    returned pull-back field; with mass_effect = 0, u = 0 and the image is untouched there), lesion inside it. The
    mask lies inside the displaced brain mask. The mass effect is a smooth deformation, not a topological change,
    so it is not in the mask."""
    rng = as_rng(rng)
    img, brain = _image(image, rng.device), _mask(brain_mask, rng.device)
    shape = tuple(img.shape[2:])
    r = rng.scalar(*_range(radius))
    centre = _random_voxel(brain & (_depth(brain, r) > 0.95), rng, fallback=brain)
    amplitude = rng.scalar(*_range(mass_effect))
    disp = mass_effect_field(shape, centre, amplitude, 1.5 * r, rng.device)
    if amplitude > 0:
        img, brain = warp(img, disp, padding="border"), _warp_mask(brain, disp)
    mask = random_blob(shape, centre, r, rng, irregularity) & brain
    return torch.where(mask, _lesion_values(shape, mask, rng, intensity, rim), img), mask, disp


def insert_resection(image: torch.Tensor | np.ndarray, brain_mask: torch.Tensor | np.ndarray, rng: Rng, *,
                     tissue: torch.Tensor | np.ndarray | None = None, radius: Range = (4.0, 10.0),
                     fluid: float | None = None, irregularity: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """A resection cavity: brain tissue in a blob near the cortex replaced by CSF-like fluid (dark in T1).

    `fluid` defaults to `fluid_value` (from the tissue labels 0 bg, 1 CSF, 2 GM, 3 WM when given). Returns
    (new_image, change_mask); the mask is the replaced region (blob ∩ brain), which may include former CSF."""
    rng = as_rng(rng)
    img, brain = _image(image, rng.device), _mask(brain_mask, rng.device)
    labels = _image(tissue, rng.device).round() if tissue is not None else None
    r = rng.scalar(*_range(radius))
    depth = _depth(brain, r / 2.0)
    centre = _random_voxel(brain & (depth > 0.6) & (depth < 0.9), rng, fallback=brain)
    mask = random_blob(img.shape[2:], centre, r, rng, irregularity) & brain
    value = fluid if fluid is not None else fluid_value(img, brain, labels)
    return _fill(img, mask, value, rng), mask


def ventricles(csf_mask: torch.Tensor, brain_mask: torch.Tensor | None, depth: float = 5.0) -> torch.Tensor:
    """Deep CSF (more than `depth` voxels inside the brain) as a ventricle proxy; all CSF when no brain mask is
    given or no CSF is that deep."""
    if brain_mask is None:
        return csf_mask
    deep = csf_mask & (_depth(brain_mask, depth) > 0.999)
    return deep if bool(deep.any()) else csf_mask


def ventricle_change(image: torch.Tensor | np.ndarray, csf_or_ventricle_mask: torch.Tensor | np.ndarray, rng: Rng,
                     *, brain_mask: torch.Tensor | np.ndarray | None = None, mode: str | None = None,
                     radius: Range = (4.0, 8.0), irregularity: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Open or close part of a ventricle (random `mode` when None).

    open: fluid (low percentile of ventricle intensities) fills tissue within r voxels of the ventricle, in a blob at
    a ventricle-boundary voxel. close: ventricle voxels in a blob become the local mean of the surrounding
    non-CSF tissue (mostly WM around ventricles). With a brain mask, only deep CSF counts as ventricle and the
    change stays in the brain. Returns (new_image, mask of replaced voxels)."""
    rng = as_rng(rng)
    img, csf = _image(image, rng.device), _mask(csf_or_ventricle_mask, rng.device)
    brain = _mask(brain_mask, rng.device) if brain_mask is not None else None
    vent = ventricles(csf, brain)
    inside = brain if brain is not None else torch.ones_like(vent)
    mode = mode or ("open" if _chance(rng, 0.5) else "close")
    r = rng.scalar(*_range(radius))
    if mode == "open":
        centre = _random_voxel(vent & dilate(~vent, 1), rng, fallback=vent)
        band = dilate(vent, math.ceil(r)) & ~csf & inside
        mask = random_blob(img.shape[2:], centre, r, rng, irregularity) & band
        return _fill(img, mask, _quantile(img, vent, 0.10), rng), mask
    if mode != "close":
        raise ValueError(f"mode must be 'open' or 'close', not {mode!r}")
    centre = _random_voxel(vent, rng)
    mask = random_blob(img.shape[2:], centre, r, rng, irregularity) & vent
    tissue, window = (inside & ~csf).float(), 4 * math.ceil(r) + 1
    local = box_mean(img * tissue, window) / box_mean(tissue, window).clamp_min(1e-3)
    return _fill(img, mask, local, rng), mask


# --- nuisance: smooth deformation and intensity change ----------------------------------------------------------
def random_smooth_deformation(shape: Sequence[int], rng: Rng, max_displacement: float = 3.0, *,
                              spacing: float = 16.0, steps: int = 5) -> torch.Tensor:
    """(1, D, *S) diffeomorphic voxel displacement exp(v), v smooth noise (control points every `spacing` voxels)
    scaled to max |v| = max_displacement, which bounds max |u| closely for smooth fields."""
    rng = as_rng(rng)
    shape = tuple(int(n) for n in shape)
    if max_displacement <= 0:
        return torch.zeros((1, len(shape), *shape), device=rng.device)
    half = tuple(max(n // 2, 2) for n in shape)  # integrated at half resolution, as RandomFields.diffeomorphism
    scale = (half[0] - 1) / max(shape[0] - 1, 1)
    v = rng.smooth_noise(1, len(shape), half, max(spacing * scale, 1.0))
    v = v * (max_displacement * scale / _norm(v).max().clamp_min(1e-12))
    return resize_displacement(integrate_svf(v, steps), shape)


def random_intensity_change(image: torch.Tensor, rng: Rng, *, gamma_std: float = 0.15, bias: float = 0.2,
                            noise: Range = (0.0, 0.03), normalise: bool = True) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field, Gaussian noise on the foreground (> 0), then the percentile
    normalisation of inference (as `TemplateAugmenter` does for training images)."""
    rng = as_rng(rng)
    img = _image(image, rng.device)
    shape = tuple(img.shape[2:])
    img = img.clamp(0, 1) ** math.exp(float(rng.randn(())) * gamma_std)
    if bias > 0:
        img = img * torch.exp(rng.smooth_noise(1, 1, shape, max(shape) / 4.0) * rng.scalar(0.0, bias))
    img = img + rng.randn(img.shape) * rng.scalar(*_range(noise)) * (img > 0)
    return percentile_normalise_torch(img) if normalise else img


def deform(image: torch.Tensor, mask: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image∘(id + u), mask∘(id + u) by linear warp > 0.5): a changed image and its mask onto the fixed grid."""
    if not bool(displacement.any()):
        return image, mask
    return warp(image, displacement, padding="border"), _warp_mask(mask, displacement)


# --- cases --------------------------------------------------------------------------------------------------------
@dataclass
class TopologyCase:
    """One benchmark pair on the fixed grid. `displacement`: the true fixed→moving voxel mapping outside the change
    (nuisance deformation composed with any mass effect), for displacement-error rows."""

    fixed: torch.Tensor
    moving: torch.Tensor
    change_mask: torch.Tensor
    brain_mask: torch.Tensor | None = None
    kind: str = ""
    meta: dict = field(default_factory=dict)
    displacement: torch.Tensor | None = None


def _template_tensors(image, mask, tissue, ndim: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    out = (_image(image, device), _mask(mask, device), _image(tissue, device).round() if tissue is not None else None)
    if out[0].dim() - 2 < ndim:
        raise ValueError(f"a {out[0].dim() - 2}D template cannot give {ndim}D cases")
    return out


def _needs_slice(image: torch.Tensor, ndim: int) -> bool:
    """2D cases from a 3D template take axial slices; a 2D template is used as it is."""
    return ndim == 2 and image.dim() == 5


def _axial_slice(volumes: Sequence[torch.Tensor | None], brain: torch.Tensor, rng: RandomFields,
                 jitter: int) -> tuple[list[torch.Tensor | None], int]:
    """Axial (k) slices near the slice of largest brain area, ± jitter."""
    area = brain[0, 0].flatten(0, 1).sum(0)
    k = int(area.argmax()) + int(rng.randint(-jitter, jitter + 1, ()))
    k = min(max(k, 0), brain.shape[-1] - 1)
    return [v[..., k] if v is not None else None for v in volumes], k


def _change(kind: str, img: torch.Tensor, brain: torch.Tensor, tissue: torch.Tensor | None, rng: RandomFields,
            options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if kind == "lesion":
        return insert_lesion(img, brain, rng, **options)
    if kind == "resection":
        return (*insert_resection(img, brain, rng, tissue=tissue, **options), None)
    if kind == "ventricle":
        csf = tissue == 1 if tissue is not None else brain & (img < fluid_value(img, brain) * 1.5)
        return (*ventricle_change(img, csf, rng, brain_mask=brain, **options), None)
    raise ValueError(f"unknown change kind {kind!r} (expected one of {BRAIN_KINDS})")


def _pair(changed: torch.Tensor, mask: torch.Tensor, brain: torch.Tensor, moving: torch.Tensor,
          mass: torch.Tensor | None, rng: RandomFields, kind: str, meta: dict, max_displacement: float,
          intensity: bool) -> TopologyCase:
    """Deform and re-contrast the changed image into the fixed image J; the original is the moving image I."""
    u = random_smooth_deformation(changed.shape[2:], rng, max_displacement)
    fixed, fixed_mask = deform(changed, mask, u)
    fixed_brain = _warp_mask(_warp_mask(brain, mass) if mass is not None else brain, u)
    truth = compose(mass, u) if mass is not None else u
    if intensity:
        fixed = random_intensity_change(fixed, rng)
    return TopologyCase(fixed, moving, fixed_mask, fixed_brain, kind, meta, truth)


def brain_cases(template_image, template_mask, template_tissue, n: int, ndim: int, rng: Rng,
                kinds: Sequence[str] = BRAIN_KINDS, *, max_displacement: float = 3.0, intensity: bool = True,
                slice_jitter: int = 4, options: dict[str, dict] | None = None) -> list[TopologyCase]:
    """n pairs from one real template (kinds in turn): fixed = template + change, deformed and re-contrasted;
    moving = the template. ndim = 2 uses axial slices near the largest brain slice of a 3D template (a 2D template
    as it is). `options[kind]`: keyword arguments of that kind's generator, e.g. {"lesion": {"radius": (4, 9)}}."""
    rng = as_rng(rng)
    image, brain, tissue = _template_tensors(template_image, template_mask, template_tissue, ndim, rng.device)
    cases = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        meta: dict = {"kind": kind}
        img, br, tis = image, brain, tissue
        if _needs_slice(image, ndim):
            (img, br, tis), meta["slice_k"] = _axial_slice((image, brain, tissue), brain, rng, slice_jitter)
        changed, mask, mass = _change(kind, img, br, tis, rng, dict((options or {}).get(kind, {})))
        cases.append(_pair(changed, mask, br, img, mass, rng, kind, meta, max_displacement, intensity))
    return cases


def control_and_outlier_sets(template_image, template_mask, template_tissue, n_controls: int, n_tests: int,
                             ndim: int, rng: Rng, *, max_displacement: float = 3.0, slice_jitter: int = 4,
                             lesion: dict | None = None) -> tuple[list[TopologyCase], list[TopologyCase]]:
    """The outlier setting: healthy-looking controls (template, random smooth deformation and intensity change, empty
    change mask, kind "control") and test images with lesions (kind "lesion"), all with moving = the template.
    Score a test J against the controls' `fixed` images with Q."""
    rng = as_rng(rng)
    image, brain, tissue = _template_tensors(template_image, template_mask, template_tissue, ndim, rng.device)
    controls = []
    for _ in range(n_controls):
        meta: dict = {"kind": "control"}
        img, br = image, brain
        if _needs_slice(image, ndim):
            (img, br), meta["slice_k"] = _axial_slice((image, brain), brain, rng, slice_jitter)
        empty = torch.zeros_like(br)
        controls.append(_pair(img, empty, br, img, None, rng, "control", meta, max_displacement, True))
    tests = brain_cases(image, brain, tissue, n_tests, ndim, rng, ("lesion",), max_displacement=max_displacement,
                        slice_jitter=slice_jitter, options={"lesion": lesion or {}})
    return controls, tests


def template_arrays(cache: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, brain mask, tissue labels) of template `name` ("mni152", "colin27") from a loaded template cache."""
    return cache[f"{name}_image"], cache[f"{name}_mask"], cache[f"{name}_tissue"]


def validation_pairs(cache: dict | str | Path, *, ndim: int, n: int, seed: int, device: str | torch.device = "cpu",
                     kinds: Sequence[str] = ("lesion",)) -> list[dict[str, torch.Tensor]]:
    """Held-out pairs for a training-time AUC, as dicts (fixed, moving, change, brain): `brain_cases` alternating
    over the cache's templates, on the network grid."""
    cache = load_cache(cache) if isinstance(cache, (str, Path)) else cache
    rng = RandomFields(seed, device)
    out = []
    for i in range(n):
        template = template_arrays(cache, TEMPLATES[i % len(TEMPLATES)])
        case = brain_cases(*template, 1, ndim, rng, (kinds[i % len(kinds)],))[0]
        out.append({"fixed": case.fixed, "moving": case.moving, "change": case.change_mask, "brain": case.brain_mask})
    return out


# --- 2D cell-like slice pairs (the paper's SBEM setting, generated) ------------------------------------------------
_BACKGROUND, _CYTOPLASM, _MEMBRANE = 0.8, 0.55, 0.15


def _cell_centres(shape: Sequence[int], n: int, radii: list[float], rng: RandomFields) -> list[torch.Tensor]:
    """Cell 0 and 1 overlap (their shared wall can merge); the others are spread by rejection sampling."""
    size = torch.tensor([float(s) for s in shape])
    c0 = torch.stack([torch.tensor(rng.scalar(0.3, 0.7)) * size[d] for d in range(2)])
    angle = rng.scalar(0.0, 2 * math.pi)
    c1 = c0 + 0.75 * (radii[0] + radii[1]) * torch.tensor([math.cos(angle), math.sin(angle)])
    centres = [c0, c1]
    for i in range(2, n):
        for _ in range(50):
            c = torch.stack([torch.tensor(rng.scalar(0.05, 0.95)) * size[d] for d in range(2)])
            if all(float((c - o).norm()) > 0.9 * (radii[i] + radii[j]) for j, o in enumerate(centres)):
                break
        centres.append(c)
    return centres


def _cell_labels(shape: Sequence[int], centres: list[torch.Tensor], radii: list[float],
                 rng: RandomFields) -> torch.Tensor:
    """(1, 1, *S) int labels: 0 background, i + 1 where cell i's irregular blob field is the lowest and < 0."""
    grid = identity_grid(tuple(shape), device=rng.device)
    fields = []
    for c, r in zip(centres, radii):
        dist = _norm(grid - c.to(rng.device).view(1, 2, 1, 1)) / r
        fields.append(dist - 1.0 + 0.2 * rng.smooth_noise(1, 1, tuple(shape), max(0.8 * r, 2.0)).clamp(-2.5, 2.5))
    stacked = torch.cat(fields, 1)
    low, arg = stacked.min(1, keepdim=True)
    return torch.where(low < 0, arg + 1, torch.zeros_like(arg))


def _boundaries(labels: torch.Tensor) -> torch.Tensor:
    """Voxels with a differently labelled 8-neighbour: 2-voxel-thick membranes between cells and around them."""
    lab = labels.float()
    high = F.max_pool2d(lab, 3, stride=1, padding=1)
    low = -F.max_pool2d(-lab, 3, stride=1, padding=1)
    return (high != lab) | (low != lab)  # max pooling pads with −inf: the image border is no boundary


def _organelles(labels: torch.Tensor, n_cells: int, per_cell: tuple[int, int], rng: RandomFields
                ) -> list[tuple[torch.Tensor, float, str]]:
    """(blob, intensity, status) per organelle, inside cells away from membranes; status common/appear/disappear
    (at least one change)."""
    shape = tuple(labels.shape[2:])
    out = []
    for cell in range(1, n_cells + 1):
        for _ in range(int(rng.randint(per_cell[0], per_cell[1] + 1, ()))):
            r = rng.scalar(1.5, 3.5)
            room = _erode(labels == cell, math.ceil(r) + 2)
            if not bool(room.any()):
                continue
            blob = random_blob(shape, _random_voxel(room, rng), r, rng, 0.2)
            value = rng.scalar(0.05, 0.3) if _chance(rng, 0.6) else rng.scalar(0.85, 1.0)
            draw = rng.scalar(0.0, 1.0)
            out.append((blob, value, "common" if draw < 0.6 else "appear" if draw < 0.8 else "disappear"))
    if out and all(status == "common" for *_, status in out):
        out[0] = (out[0][0], out[0][1], "appear")
    return out


def _render(labels: torch.Tensor, organelles: list[tuple[torch.Tensor, float, str]], hidden: str,
            texture: torch.Tensor) -> torch.Tensor:
    """Background, textured cytoplasm, organelles (except status `hidden`), membranes on top."""
    img = torch.where(labels > 0, _CYTOPLASM + texture, torch.full_like(texture, _BACKGROUND))
    for blob, value, status in organelles:
        if status != hidden:
            img = torch.where(blob, torch.full_like(img, value), img)
    return torch.where(_boundaries(labels), torch.full_like(img, _MEMBRANE), img)


def cell_pair_2d(shape: Sequence[int] = (128, 128), rng: Rng = 0, *, n_cells: int = 6,
                 organelles_per_cell: tuple[int, int] = (1, 4), merge: bool = True, max_displacement: float = 2.0,
                 noise: float = 0.03) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbouring SBEM-like slices: cells with membrane rings and dark/bright organelles, some of which appear
    (fixed only) or disappear (moving only), and two overlapping cells whose shared wall is open in one slice
    (merged boundaries). The fixed slice is then smoothly deformed; both get independent noise.

    Returns (fixed, moving, change_mask), the mask on the fixed grid: changed organelles and the merged wall."""
    return _cell_pair(shape, as_rng(rng), n_cells, organelles_per_cell, merge, max_displacement, noise)[:3]


def _cell_pair(shape: Sequence[int], rng: RandomFields, n_cells: int, organelles_per_cell: tuple[int, int],
               merge: bool, max_displacement: float, noise: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`cell_pair_2d` plus the true fixed→moving displacement."""
    shape = tuple(int(s) for s in shape)
    size = min(shape)
    radii = [rng.scalar(0.12, 0.2) * size for _ in range(n_cells)]
    labels = _cell_labels(shape, _cell_centres(shape, n_cells, radii, rng), radii, rng)
    merged = torch.where(labels == 2, torch.ones_like(labels), labels) if merge else labels
    merge_in_fixed = _chance(rng, 0.5)
    labels_fixed, labels_moving = (merged, labels) if merge_in_fixed else (labels, merged)
    organelles = _organelles(labels, n_cells, organelles_per_cell, rng)
    texture = _texture(shape, rng, 0.05, 4.0)
    moving = _render(labels_moving, organelles, "appear", texture)
    fixed = _render(labels_fixed, organelles, "disappear", texture)
    mask = _boundaries(labels_fixed) ^ _boundaries(labels_moving)
    for blob, _, status in organelles:
        if status != "common":
            mask = mask | blob
    u = random_smooth_deformation(shape, rng, max_displacement)
    fixed, mask = deform(fixed, mask, u)
    if noise > 0:
        fixed = fixed + noise * rng.randn(fixed.shape)
        moving = moving + noise * rng.randn(moving.shape)
    return fixed, moving, mask, u


def cell_cases(n: int, shape: Sequence[int] = (128, 128), rng: Rng = 0, *, n_cells: int = 6,
               organelles_per_cell: tuple[int, int] = (1, 4), merge: bool = True, max_displacement: float = 2.0,
               noise: float = 0.03) -> list[TopologyCase]:
    """n `cell_pair_2d` pairs as `TopologyCase`s (kind "cell", with the true displacement)."""
    rng = as_rng(rng)
    cases = []
    for _ in range(n):
        fixed, moving, mask, u = _cell_pair(shape, rng, n_cells, organelles_per_cell, merge, max_displacement, noise)
        cases.append(TopologyCase(fixed, moving, mask, kind="cell", displacement=u))
    return cases
