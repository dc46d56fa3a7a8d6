"""Reading an initial affine: a 4x4 RAS text matrix, or an ITK/Slicer linear transform file (.tfm/.mat/.h5).

Both are taken to map fixed-space points to moving-space points (ITK's resampling direction, and the
direction of φ); ITK files are in LPS and are converted to RAS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def load_affine(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.suffix.lower() in (".txt", ".csv", ".mat4"):
        try:
            m = np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None)
        except ValueError as exc:
            raise InputError(f"cannot read a 4x4 matrix ({exc})", path) from exc
        if m.shape != (4, 4):
            raise InputError(f"expected a 4x4 RAS matrix, got shape {m.shape}", path)
        return m
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError("cannot read transform (expected an ITK .tfm/.mat/.h5 or a 4x4 .txt matrix)", path) from exc
    try:
        tx = sitk.AffineTransform(tx) if tx.GetName() != "CompositeTransform" else tx
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"only linear transforms can be an initial transform (got {tx.GetName()})", path) from exc
    if tx.GetDimension() != 3:
        raise InputError("initial transform must be 3D", path)
    a = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    return FLIP @ lps @ FLIP


def save_affine_itk(matrix_ras: np.ndarray, path: str | Path) -> None:
    """Write a RAS fixed→moving matrix as an ITK transform file (LPS), loadable in Slicer as a linear transform."""
    lps = FLIP @ np.asarray(matrix_ras, float) @ FLIP
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(lps[:3, :3].ravel().tolist())
    tx.SetTranslation(lps[:3, 3].tolist())
    sitk.WriteTransform(tx, str(path))
