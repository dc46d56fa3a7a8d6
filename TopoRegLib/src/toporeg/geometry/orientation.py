"""Reorient to canonical RAS+ (nibabel's closest canonical) and back, exactly (axis flips/permutations only)."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from ..io.volume import Volume


@dataclass(frozen=True)
class Reorientation:
    """What `to_canonical` did, so `from_canonical` can undo it on any array on that grid."""
    ornt: np.ndarray          # nibabel orientation: original axes → RAS
    original_shape: tuple[int, ...]
    original_affine: np.ndarray


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """Volume with voxel axes permuted/flipped so they point R, A, S (nearest), and how to undo it."""
    n_sp = len(volume.spatial_shape)
    ornt = nib.orientations.io_orientation(volume.affine)
    if n_sp == 2:  # keep a 2D image 2D: only reorient the in-plane axes
        ornt = ornt.copy()
        ornt[2] = [2, 1]
    data = _apply(volume.data, ornt, n_sp)
    transform = nib.orientations.inv_ornt_aff(ornt, volume.spatial_shape + (1,) * (3 - n_sp))
    affine = volume.affine @ transform
    out = Volume(data, affine, has_channels=volume.has_channels, is_label=volume.is_label, meta=dict(volume.meta))
    return out, Reorientation(ornt, volume.spatial_shape, volume.affine.copy())


def from_canonical(volume: Volume, how: Reorientation) -> Volume:
    """Undo `to_canonical` for a volume on the canonical grid."""
    n_sp = len(how.original_shape)
    inverse = _inverse_ornt(how.ornt)
    data = _apply(volume.data, inverse, n_sp)
    return Volume(data, how.original_affine.copy(), has_channels=volume.has_channels, is_label=volume.is_label,
                  meta=dict(volume.meta))


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """Orientation that maps RAS-ordered axes back to the original axes."""
    inv = np.zeros_like(ornt)
    for src, (dst, flip) in enumerate(ornt):
        inv[int(dst)] = [src, flip]
    return inv


def _apply(data: np.ndarray, ornt: np.ndarray, n_sp: int) -> np.ndarray:
    if n_sp == 2:
        arr = data[:, :, None, ...]
        out = nib.orientations.apply_orientation(arr, ornt)
        return np.ascontiguousarray(out[:, :, 0, ...])
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))
