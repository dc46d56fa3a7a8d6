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
    if n_sp == 2:  # keep a 2D image 2D: only permute/flip the in-plane axes, in the order of their RAS targets
        ornt = _in_plane(ornt)
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


def _in_plane(ornt: np.ndarray) -> np.ndarray:
    """Orientation of a 2D image's two in-plane axes (the third stays last): the axis that points to the lower
    RAS axis comes first, so a coronal (R, S) or sagittal (A, S) plane keeps two distinct output axes."""
    first = 0 if ornt[0, 0] < ornt[1, 0] else 1
    out = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    out[first] = [0, ornt[first, 1]]
    out[1 - first] = [1, ornt[1 - first, 1]]
    return out


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
