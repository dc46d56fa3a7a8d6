"""`toporeg info FILE`: what a clinician checks first — shape, spacing, orientation, intensities, labels."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..io import load_volume


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe an image file: shape, spacing, orientation, intensity range, labels")
    p.add_argument("file", help="image file (.nii/.nii.gz/.nrrd/.seg.nrrd/.mha/.mhd) or DICOM series folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def summarize(path: str) -> dict:
    vol = load_volume(path)
    data = vol.data
    finite = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.ones(data.shape, bool)
    info = {
        "file": str(path),
        "dimensions": vol.spatial_ndim,
        "shape": list(vol.grid_shape),
        "channels": vol.n_channels,
        "dtype": str(data.dtype),
        "spacing_mm": [round(float(s), 6) for s in vol.spacing[: vol.spatial_ndim]],
        "origin_ras_mm": [round(float(o), 4) for o in vol.origin],
        "orientation": vol.orientation_code,
        "direction_ras": np.round(vol.direction, 6).tolist(),
        "intensity_range": [float(data[finite].min()), float(data[finite].max())] if finite.any() else None,
        "non_finite_voxels": int((~finite).sum()),
        "is_label_map": bool(vol.is_label),
    }
    if vol.is_label:
        values = np.unique(data)
        info["label_count"] = int((values != 0).sum())
        info["labels"] = [int(v) for v in values[:50]]
        if vol.meta.get("segments"):
            info["segments"] = [s["name"] for s in vol.meta["segments"]]
    return info


def run(args: argparse.Namespace) -> int:
    info = summarize(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        print(f"{key:>18}: {value}")
    return 0
