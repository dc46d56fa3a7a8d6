"""What a registration produces, on the fixed image's native grid, and how it is written to disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..geometry import resample_to, tensor_to_volume, volume_to_tensor
from ..io import Volume, save_volume
from ..transforms.affine import affine_coordinates
from ..transforms.fields import itk_displacement_volume, physical_displacement
from ..transforms.sampling import sample


@dataclass
class RegistrationResult:
    """Mapping x_moving = x_fixed + u(x_fixed), plus everything a user inspects afterwards.

    `moving_coords` (1, ndim, *fixed grid) holds, for every fixed voxel, the moving-grid voxel it maps
    to; `displacement_ras` is the same mapping as a RAS-mm field (saved in LPS, ITK convention).
    """

    fixed: Volume
    moving: Volume
    moving_coords: torch.Tensor
    displacement_ras: np.ndarray
    warped: Volume
    jacobian: Volume
    folding_fraction: float
    folding_region: str
    affine_ras: np.ndarray
    inverse_displacement_ras: np.ndarray | None = None
    similarity_before: float | None = None
    similarity_after: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    messages: list[str] = field(default_factory=list)

    def warp_volume(self, moving_like: Volume, *, interpolation: str | None = None) -> Volume:
        """Bring any image on the moving grid (e.g. its label map) onto the fixed grid."""
        if not moving_like.same_grid(self.moving):
            moving_like = resample_to(moving_like, self.moving)
        mode = interpolation or ("nearest" if moving_like.is_label else "linear")
        image = volume_to_tensor(moving_like, device=self.moving_coords.device)
        out = sample(image, self.moving_coords.to(image.dtype), mode=mode)
        dtype = moving_like.data.dtype if moving_like.is_label else np.float32
        if moving_like.is_label:
            out = out.round()
        vol = tensor_to_volume(out, self.fixed, is_label=moving_like.is_label, dtype=dtype)
        vol.meta = {k: v for k, v in moving_like.meta.items() if k != "path"}
        return vol

    def displacement_volume(self) -> Volume:
        return itk_displacement_volume(self.displacement_ras, self.fixed)

    def inverse_displacement_volume(self) -> Volume | None:
        if self.inverse_displacement_ras is None:
            return None
        return itk_displacement_volume(self.inverse_displacement_ras, self.moving)

    def summary(self) -> dict[str, Any]:
        return {
            "folding_percent": round(100.0 * self.folding_fraction, 5),
            "folding_region": self.folding_region,
            "jacobian_min": float(np.min(self.jacobian.data)),
            "jacobian_max": float(np.max(self.jacobian.data)),
            "similarity_before": self.similarity_before,
            "similarity_after": self.similarity_after,
            "max_displacement_mm": float(np.linalg.norm(self.displacement_ras, axis=-1).max()),
            "affine_ras": np.round(self.affine_ras, 6).tolist(),
            "device": self.device,
        }

    def save(self, out_dir: str | Path, *, moving_labels: Volume | None = None) -> dict[str, str]:
        """Write the issue's fixed file names into `out_dir`; returns role → file name."""
        out = Path(out_dir)
        written = {"warped": "warped.nii.gz", "displacement": "displacement.nii.gz", "jacobian": "jacobian.nii.gz"}
        save_volume(self.warped, out / written["warped"])
        save_volume(self.displacement_volume(), out / written["displacement"])
        save_volume(self.jacobian, out / written["jacobian"])
        inverse = self.inverse_displacement_volume()
        if inverse is not None:
            written["inverse_displacement"] = "inverse_displacement.nii.gz"
            save_volume(inverse, out / written["inverse_displacement"])
        if moving_labels is not None:
            written["warped_labels"] = "warped_labels.nii.gz"
            save_volume(self.warp_volume(moving_labels), out / written["warped_labels"])
        return written


def inverse_field_ras(moving: Volume, fixed: Volume, voxel_map: torch.Tensor,
                      inverse_disp: torch.Tensor | None) -> np.ndarray:
    """RAS-mm field on the moving grid mapping moving points to fixed points: y ↦ z + w(z), z = M⁻¹y."""
    inv = torch.linalg.inv(voxel_map).float()
    z = affine_coordinates(inv, moving.grid_shape, device=voxel_map.device)
    if inverse_disp is not None:
        z = z + sample(inverse_disp, z, padding="border")
    return physical_displacement(z, moving.affine, fixed.affine)
