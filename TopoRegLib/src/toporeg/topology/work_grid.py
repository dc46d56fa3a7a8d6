"""Moving images and maps between native grids and the work grid that the topology fits run on.

Shared by the per-pair pipeline (controls brought onto FIXED's work grid) and the cohort control statistics
(controls and every scored image brought onto the reference's work grid, Q brought back onto each image's own
grid), so both use the same affine registration and the same resampling.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..geometry import resample_to
from ..io import Volume
from ..models.model_grid import network_input
from ..progress import Progress
from ..registration import preset, register


def to_target_grid(values: torch.Tensor | np.ndarray, grid: Volume, target: Volume,
                   transform: np.ndarray | None = None) -> np.ndarray:
    """A (*S) map on the work `grid` as float32 on `target`'s grid (linear resampling unless the grids are one).

    `transform` (4x4 RAS) maps a target-space point to the work-grid space point to sample; identity when None.
    Points outside the work grid get 0."""
    data = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    data = data.astype(np.float32)
    if transform is None and (grid is target or grid.same_grid(target)):
        return data.reshape(target.grid_shape)
    res = resample_to(Volume(data, grid.affine), target, transform=transform, interpolation="linear")
    return np.asarray(res.data, np.float32).reshape(target.grid_shape)


def affine_onto_grid(image: Volume, reference: Volume, grid: Volume, preset_name: str, dev: torch.device, *,
                     mask: Volume | None = None, progress: Progress | None = None,
                     names: tuple[str, str] = ("control image", "fixed")) -> tuple[torch.Tensor, np.ndarray]:
    """`image` registered affinely to `reference` (engine, `preset_name` with an affine transform) and resampled
    onto the work `grid` as a network input (1, 1, *grid). Also returns the 4x4 RAS affine that maps a reference
    point to the matching image point (invert it to bring work-grid maps back onto the image's grid).
    `names` words the dimension error: (what `image` is, what `reference` is)."""
    if image.spatial_ndim != reference.spatial_ndim:
        raise InputError(f"{names[0]} is {image.spatial_ndim}D but {names[1]} is {reference.spatial_ndim}D",
                         image.meta.get("path"))
    if image is reference:
        transform = np.eye(4)
    else:
        aff = register(reference, image, preset(preset_name).with_(transform="affine"), moving_mask=mask,
                       progress=progress, device=dev)
        transform = aff.affine_ras
    return network_input(image, grid, mask=mask, transform=transform, device=dev), transform
