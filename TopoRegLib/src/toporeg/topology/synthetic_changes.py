"""The topological changes inserted into brain images: a lesion with mass effect, a resection cavity, a ventricle
opened or closed. Conventions (mask of replaced voxels, (1, 1, *S) tensors, one seeded RNG): see
`toporeg.topology.synthetic`."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..filters import box_mean
from ..training.synth import RandomFields
from ..transforms.sampling import identity_grid, warp
from .synthetic_common import (Range, Rng, _chance, _erode, _image, _mask, _random_voxel, _range, _texture,
                               _warp_mask, as_rng, dilate, random_blob)

BRAIN_KINDS = ("lesion", "resection", "ventricle")


def _depth(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Fraction of the (2r+1)^d box around each voxel inside the mask: 1 deeper than r, ≈ 0.5 on the boundary.
    A distance-to-boundary proxy at O(1) cost per voxel whatever r (cumulative-sum box filter)."""
    return box_mean(mask.float(), 2 * max(int(round(radius)), 1) + 1)


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
