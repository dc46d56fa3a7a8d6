"""The `Volume` type: a voxel array indexed [i, j, k(, c)] plus a 4x4 voxel-to-RAS affine.

Conventions (shared/CONVENTIONS.md): `data[i, j, k]` in voxel index order, optional trailing channel
axis; `affine @ (i, j, k, 1)` gives RAS millimetres. 2D images keep a 4x4 affine; a 3D array whose
third axis has length 1 is treated as 2D by `spatial_ndim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    data: np.ndarray
    affine: np.ndarray
    has_channels: bool = False
    is_label: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got {self.affine.shape}", self.meta.get("path"))
        n_spatial = self.data.ndim - int(self.has_channels)
        if n_spatial not in (2, 3):
            raise InputError(
                f"expected a 2D or 3D image, got {n_spatial} spatial dimensions (shape {self.data.shape})",
                self.meta.get("path"),
            )

    # --- shape -------------------------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes as stored (2 or 3 entries)."""
        return tuple(self.data.shape[: self.data.ndim - int(self.has_channels)])

    @property
    def spatial_ndim(self) -> int:
        """2 for a 2D image (including a 3D array with one slice), else 3."""
        shape = self.spatial_shape
        return 2 if len(shape) == 2 or shape[2] == 1 else 3

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Spatial shape with the singleton slice of a 2D image dropped (length == spatial_ndim)."""
        return self.spatial_shape[: self.spatial_ndim]

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[-1]) if self.has_channels else 1

    # --- geometry ----------------------------------------------------------------------------
    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    @property
    def orientation_code(self) -> str:
        """Three-letter axis code, e.g. 'RAS' or 'LPS' (nearest cardinal direction per axis)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def voxel_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_voxel(self, ras: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        ras = np.asarray(ras, dtype=np.float64)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when both volumes sample space at the same points."""
        return self.grid_shape == other.grid_shape and np.allclose(self.affine, other.affine, atol=atol)

    # --- construction ------------------------------------------------------------------------
    def with_data(self, data: np.ndarray, *, is_label: bool | None = None, has_channels: bool | None = None) -> "Volume":
        """A new volume on the same grid with other voxels (metadata copied, path dropped)."""
        meta = {k: v for k, v in self.meta.items() if k != "path"}
        return replace(
            self,
            data=data,
            is_label=self.is_label if is_label is None else is_label,
            has_channels=self.has_channels if has_channels is None else has_channels,
            meta=meta,
        )

    def astype(self, dtype: Any) -> "Volume":
        return self.with_data(self.data.astype(dtype))

    def describe(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing[: self.spatial_ndim])
        return f"{'x'.join(map(str, self.grid_shape))} voxels, spacing ({sp}) mm, {self.orientation_code}"


def affine_from_lps(direction: np.ndarray, spacing: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Voxel-to-RAS affine from ITK-style LPS direction (3x3, columns = axes), spacing and origin."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    lps[:3, 3] = np.asarray(origin, float)
    return LPS_FROM_RAS @ lps


def lps_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `affine_from_lps`: (direction 3x3, spacing 3, origin 3) in ITK's LPS convention."""
    lps = LPS_FROM_RAS @ np.asarray(affine, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps[:3, :3] / spacing, spacing, lps[:3, 3].copy()
