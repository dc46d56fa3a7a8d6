"""2D cell-like slice pairs (the paper's SBEM setting, generated): cells with membranes and organelles that appear,
disappear or merge, with exact change masks."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..training.synth import RandomFields
from ..transforms.sampling import identity_grid
from .synthetic_common import Rng, _chance, _erode, _norm, _random_voxel, _texture, as_rng, random_blob
from .synthetic_pairs import TopologyCase, deform, random_smooth_deformation

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
