"""Intensity normalisation shared by every model and the optimisation engine."""

from __future__ import annotations

import numpy as np


def percentile_normalize(data: np.ndarray, lower: float = 1.0, upper: float = 99.0, *,
                         mask: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
    """Map the `lower`/`upper` percentiles (of the masked voxels, else of all) to 0 and 1 (float32).

    Percentiles instead of min/max keep one hot voxel or a dark background from squashing the contrast.
    """
    return normalize_to_bounds(data, *percentile_bounds(data, lower, upper, mask=mask), clip=clip)


def normalize_to_bounds(data: np.ndarray, lo: float, hi: float, *, clip: bool = True) -> np.ndarray:
    """(data − lo) / (hi − lo) as float32, clipped to [0, 1] by default: the map `percentile_normalize` applies."""
    out = (data.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0) if clip else out


def percentile_bounds(data: np.ndarray, lower: float = 1.0, upper: float = 99.0, *,
                      mask: np.ndarray | None = None) -> tuple[float, float]:
    """The intensities (lo, hi) that `percentile_normalize` maps to 0 and 1 (min/max when the percentiles tie),
    so that a caller can map normalised values back to the image's units: x = lo + y·(hi − lo)."""
    values = data[mask.astype(bool)] if mask is not None else data
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite voxels to normalise")
    lo, hi = np.percentile(values, [lower, upper])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise ValueError("image is constant: cannot normalise its intensities")
    return float(lo), float(hi)
