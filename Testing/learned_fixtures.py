"""Images with a known answer for the learned-method tests (test_learned_methods*.py): smooth blobs defined in RAS mm,
sampled on an oblique-axis 2D grid, so a shift in mm is the exact answer whatever the voxel axes."""

from __future__ import annotations

import numpy as np

from toporeg.io import Volume

SHAPE = (32, 40)
# i runs towards -R (left), j towards +A: the model grid's axes must come out as +R, +A whatever the fixed axes
FIXED_AFFINE = np.array([[-1.5, 0.0, 0.0, 29.0], [0.0, 1.5, 0.0, -30.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
CARD_GRID = {"shape": [24, 24], "spacing_mm": [2.0, 2.0]}
_rng = np.random.default_rng(3)
BLOBS = [((_rng.uniform(-13, 13), _rng.uniform(-13, 13)), _rng.uniform(2.5, 4.5), _rng.uniform(0.6, 1.4))
         for _ in range(14)]   # (RAS centre mm, width mm, amplitude): all well inside both fields of view


def ras_grid(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    ijk = np.concatenate([ijk, np.zeros(ijk.shape[:-1] + (1,))], -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def blobs(shape, affine, shift=(0.0, 0.0)) -> Volume:
    """Smooth blobs defined in RAS mm, sampled on a grid; `shift` moves the picture: image(p) = blobs(p − shift)."""
    ras = ras_grid(shape, affine)[..., :2] - np.asarray(shift)
    img = np.zeros(shape, np.float32)
    for centre, width, amp in BLOBS:
        img += amp * np.exp(-((ras - centre) ** 2).sum(-1) / (2 * width**2))
    return Volume(img.astype(np.float32), affine)


def values_at(field_ras: np.ndarray, vol: Volume, points_ras: np.ndarray) -> np.ndarray:
    """Nearest-voxel values of a (*S, 3) field at RAS points lying on voxel centres of `vol`."""
    ijk = np.rint(vol.ras_to_voxel(points_ras)[:, :2]).astype(int)
    return field_ras[ijk[:, 0], ijk[:, 1]]


def interior(vol: Volume, margin_mm: float = 8.0) -> np.ndarray:
    """Fixed voxels within ±(23 − margin) mm of the blobs' middle (inside the 46 mm model grid, off its border)."""
    ras = ras_grid(vol.grid_shape, vol.affine)
    return (np.abs(ras[..., 0]) < 23 - margin_mm) & (np.abs(ras[..., 1]) < 23 - margin_mm)


SHIFT_MM = np.array([3.0, -2.0])   # the moving picture's shift in the known-answer pairs
TINY_CARL = dict(ndim=2, channels=4, blocks=1, pad=3, unet_encoder=(4, 8), unet_final=(4,))
