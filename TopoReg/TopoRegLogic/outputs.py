"""One result type for both ways of running a registration.

In-process runs convert a `toporeg.registration.RegistrationResult`; background runs read the CLI's output
folder (`displacement.nii.gz` in ITK/LPS, `warped.nii.gz`, `jacobian.nii.gz`, `inverse_displacement.nii.gz`,
`report.json`). Both end in the same `RegistrationOutputs`, so `RegistrationLogic.apply_results` cannot
tell them apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .params import LINEAR_MODELS


@dataclass
class RegistrationOutputs:
    """x_moving = x_fixed + displacement_ras(x_fixed), RAS mm on the fixed grid (`fixed_affine`)."""

    displacement_ras: np.ndarray
    fixed_affine: np.ndarray
    warped: Any = None                     # toporeg.io.Volume on the fixed grid
    jacobian: Any = None                   # toporeg.io.Volume on the fixed grid
    affine_ras: np.ndarray | None = None   # fixed point -> moving point, 4x4 RAS
    inverse_displacement_ras: np.ndarray | None = None  # on the moving grid, moving -> fixed
    moving_affine: np.ndarray | None = None
    transform_model: str = "svf"
    folding_percent: float = 0.0
    folding_region: str = "whole fixed grid"
    seconds: float = 0.0
    device: str = "cpu"
    similarity_before: float | None = None
    similarity_after: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def is_linear(self) -> bool:
        return self.transform_model in LINEAR_MODELS


def outputs_from_result(result, seconds: float | None = None) -> RegistrationOutputs:
    """From the library's in-memory `RegistrationResult`."""
    settings = result.settings or {}
    total = seconds if seconds is not None else float(result.timings.get("registration_seconds", 0.0))
    return RegistrationOutputs(
        displacement_ras=np.asarray(result.displacement_ras), fixed_affine=result.fixed.affine,
        warped=result.warped, jacobian=result.jacobian, affine_ras=np.asarray(result.affine_ras),
        inverse_displacement_ras=result.inverse_displacement_ras, moving_affine=result.moving.affine,
        transform_model=str(settings.get("transform", "svf")), folding_percent=100.0 * result.folding_fraction,
        folding_region=result.folding_region, seconds=total, device=result.device,
        similarity_before=result.similarity_before, similarity_after=result.similarity_after,
        messages=list(result.messages))


def outputs_from_directory(out_dir: str | Path) -> RegistrationOutputs:
    """From a `toporeg register --out DIR` folder (files named by the CLI; LPS vectors converted to RAS)."""
    from toporeg.io import load_volume
    from toporeg.transforms import physical_from_itk_volume

    out, report = read_report(out_dir)
    files = report.get("files", {})
    metrics = report.get("metrics", {})
    field_volume = load_volume(out / files.get("displacement", "displacement.nii.gz"), is_label=False)
    inverse = None
    moving_affine = None
    if "inverse_displacement" in files:
        inverse_volume = load_volume(out / files["inverse_displacement"], is_label=False)
        inverse, moving_affine = physical_from_itk_volume(inverse_volume), inverse_volume.affine
    affine = metrics.get("affine_ras")
    return RegistrationOutputs(
        displacement_ras=physical_from_itk_volume(field_volume), fixed_affine=field_volume.affine,
        warped=load_volume(out / files.get("warped", "warped.nii.gz"), is_label=False),
        jacobian=load_volume(out / files.get("jacobian", "jacobian.nii.gz"), is_label=False),
        affine_ras=None if affine is None else np.asarray(affine, dtype=np.float64),
        inverse_displacement_ras=inverse, moving_affine=moving_affine,
        transform_model=str(report.get("registration_settings", {}).get("transform", "svf")),
        folding_percent=float(metrics.get("folding_percent", 0.0)),
        folding_region=str(metrics.get("folding_region", "whole fixed grid")),
        seconds=float(report.get("timings", {}).get("total_seconds", 0.0)),
        device=str(metrics.get("device", "cpu")), similarity_before=metrics.get("similarity_before"),
        similarity_after=metrics.get("similarity_after"), messages=list(report.get("messages", [])))


def read_report(out_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(folder, its report.json) of a `toporeg <command> --out DIR` folder."""
    out = Path(out_dir)
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))
