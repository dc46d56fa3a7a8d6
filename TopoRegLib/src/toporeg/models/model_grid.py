"""The grid a learned model works on, its inputs, and warnings when an input looks outside its domain.

Every learned method (VoxelMorph-diff, DIO, CARL, the topology CVAE, segmentation) runs on a grid stated in its
model card (e.g. 2 mm, canonical RAS axes; 2D models: the fixed image's plane), centred on the fixed image's
foreground, with percentile-normalised intensities (0.5/99.5, clipped) as in training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..geometry import percentile_normalize, resample_to
from ..io import Volume

PERCENTILES = (0.5, 99.5)


def model_grid(fixed: Volume, card: dict[str, Any], fixed_mask: Volume | None = None) -> Volume:
    """The model's grid (zeros volume), axes RAS (3D) or the fixed plane's axes (2D), centred on the foreground."""
    dom = card.get("input_domain", {})
    ndim = fixed.spatial_ndim
    shape = tuple(int(n) for n in dom.get("shape", (96, 112, 96)[:ndim]))
    spacing = np.asarray(dom.get("spacing_mm", [2.0] * ndim), float)
    if len(shape) != ndim:
        raise InputError(f"the model is {len(shape)}D but the images are {ndim}D")
    if ndim == 3:
        axes = np.eye(3)
    else:  # the fixed plane's axes, flipped/ordered to be closest to R, A, S
        d = fixed.direction[:, :2] * np.sign(fixed.direction[np.abs(fixed.direction[:, :2]).argmax(0), [0, 1]])
        axes = np.column_stack([d[:, np.argsort(np.abs(d).argmax(0))], fixed.direction[:, 2]])
    weight = foreground(fixed, fixed_mask)
    idx = np.argwhere(weight).mean(0) if weight.any() else (np.array(fixed.grid_shape) - 1) / 2.0
    centre = fixed.voxel_to_ras(np.concatenate([idx, np.zeros(3 - ndim)]))
    affine = np.eye(4)
    affine[:3, :3] = axes * np.concatenate([spacing, [fixed.spacing[2]] * (3 - ndim)])
    half = np.concatenate([(np.array(shape) - 1) / 2.0, np.zeros(3 - ndim)])
    affine[:3, 3] = centre - affine[:3, :3] @ half
    return Volume(np.zeros(shape + ((1,) if ndim == 2 else ()), np.uint8), affine)


def network_input(volume: Volume, grid: Volume, *, mask: Volume | None = None, transform: np.ndarray | None = None,
                  device=None) -> torch.Tensor:
    """(1, 1, *grid) input of a network: `volume` (skull-stripped by `mask` when given, as the models expect)
    resampled onto `grid` through `transform` (RAS grid point → volume point), percentile-normalised."""
    data = np.asarray(volume.data, np.float32)
    if mask is not None:
        m = mask if mask.same_grid(volume) else resample_to(mask, volume, interpolation="nearest")
        data = data * (np.asarray(m.data).reshape(data.shape) > 0)
    res = resample_to(volume.with_data(data), grid, transform=transform, device=device)
    data = percentile_normalize(np.asarray(res.data).reshape(grid.grid_shape), *PERCENTILES)
    return torch.as_tensor(data, device=device)[None, None]


def foreground(fixed: Volume, fixed_mask: Volume | None = None, percentiles: tuple[float, float] = PERCENTILES
               ) -> np.ndarray:
    """Boolean foreground on the fixed grid: the mask, else normalised intensity > 0.1."""
    if fixed_mask is not None:
        mask = resample_to(fixed_mask, fixed, interpolation="nearest").data
        return np.asarray(mask).reshape(fixed.grid_shape) > 0
    data = np.asarray(fixed.data, np.float32).reshape(fixed.grid_shape)
    return percentile_normalize(data, *percentiles) > 0.1


def learned_domain_messages(fixed: Volume, grid: Volume, card: dict[str, Any], fixed_mask: Volume | None
                            ) -> list[str]:
    """Warnings when the input looks outside the model card's input domain."""
    msgs = []
    nd = fixed.spatial_ndim
    fg = foreground(fixed, fixed_mask)
    if not fg.any():
        return ["the fixed image has no foreground above 10 % of its intensity range"]
    idx = np.argwhere(fg)
    extent = (idx.max(0) - idx.min(0)) * fixed.spacing[:nd]
    fov = (np.array(grid.grid_shape) - 1) * grid.spacing[:nd]
    if np.any(extent > fov + 1e-3):
        msgs.append(f"the fixed image's foreground ({' x '.join(f'{e:.0f}' for e in extent)} mm) is larger than the "
                    f"model's field of view ({' x '.join(f'{e:.0f}' for e in fov)} mm); outside it the deformation "
                    "is extended from the grid border")
    head = whole_head_warning(fg, fixed.spacing[:nd], card, "give a brain mask or a skull-stripped image")
    return msgs + ([head] if head else [])


WHOLE_HEAD_LITRES = 2.5  # a brain is about 1.1-1.9 L; a whole head's foreground is well above


def whole_head_warning(fg: np.ndarray, spacing: Sequence[float], card: dict[str, Any], remedy: str) -> str | None:
    """A warning when a 3D foreground looks like a whole head but the card's model saw only skull-stripped brains."""
    litres = float(fg.sum() * np.prod(spacing)) / 1e6
    if card.get("input_domain", {}).get("skull") != "stripped" or fg.ndim != 3 or litres <= WHOLE_HEAD_LITRES:
        return None
    return (f"the model was trained on skull-stripped brains, but this image's foreground is {litres:.1f} L (a brain "
            f"is about 1.1-1.9 L): it looks like a whole head; results may be poor ({remedy})")
