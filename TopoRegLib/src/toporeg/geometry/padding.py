"""Crop/pad a volume to a network-divisible shape and undo it exactly, keeping the physical geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.volume import Volume


@dataclass(frozen=True)
class PadCrop:
    """Per-axis (before, after) amounts: positive = padded voxels, negative = cropped voxels."""
    amounts: tuple[tuple[int, int], ...]
    original_shape: tuple[int, ...]
    original_affine: np.ndarray


def pad_to_multiple(volume: Volume, multiple: int, *, fill: float = 0.0) -> tuple[Volume, PadCrop]:
    """Pad each grid axis symmetrically up to the next multiple of `multiple` (affine shifted to match)."""
    target = tuple(int(np.ceil(n / multiple) * multiple) for n in volume.grid_shape)
    return pad_or_crop_to(volume, target, fill=fill)


def pad_or_crop_to(volume: Volume, shape: tuple[int, ...], *, fill: float = 0.0) -> tuple[Volume, PadCrop]:
    """Centre the volume in a grid of exactly `shape` (per grid axis), padding or cropping as needed."""
    amounts = []
    for n, t in zip(volume.grid_shape, shape):
        diff = t - n
        before = diff // 2 if diff >= 0 else -((-diff) // 2)
        amounts.append((before, diff - before))
    data = volume.data
    for axis, (before, after) in enumerate(amounts):
        data = _pad_crop_axis(data, axis, before, after, fill)
    affine = volume.affine.copy()
    shift = np.zeros(3)
    shift[: len(amounts)] = [-b for b, _ in amounts]
    affine[:3, 3] = volume.affine[:3, :3] @ shift + volume.affine[:3, 3]
    out = Volume(data, affine, has_channels=volume.has_channels, is_label=volume.is_label, meta=dict(volume.meta))
    return out, PadCrop(tuple(amounts), volume.spatial_shape, volume.affine.copy())


def undo_pad_crop(volume: Volume, how: PadCrop, *, fill: float = 0.0) -> Volume:
    """Return a volume on the original grid (cropped voxels come back as `fill`)."""
    data = volume.data
    for axis, (before, after) in enumerate(how.amounts):
        data = _pad_crop_axis(data, axis, -before, -after, fill)
    return Volume(data, how.original_affine.copy(), has_channels=volume.has_channels, is_label=volume.is_label,
                  meta=dict(volume.meta))


def _pad_crop_axis(data: np.ndarray, axis: int, before: int, after: int, fill: float) -> np.ndarray:
    if before < 0 or after < 0:
        start = max(-before, 0)
        stop = data.shape[axis] - max(-after, 0)
        data = np.take(data, np.arange(start, stop), axis=axis)
    pad = [(0, 0)] * data.ndim
    pad[axis] = (max(before, 0), max(after, 0))
    if any(p != (0, 0) for p in pad):
        data = np.pad(data, pad, mode="constant", constant_values=fill)
    return data
