"""SimpleITK image <-> `Volume`: the one place where [k, j, i] arrays and LPS geometry are translated."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .volume import Volume, affine_from_lps, lps_from_affine


def volume_from_sitk(image: sitk.Image, *, is_label: bool = False, meta: dict | None = None) -> Volume:
    dim = image.GetDimension()
    arr = sitk.GetArrayFromImage(image)  # [k, j, i(, c)]
    n_comp = image.GetNumberOfComponentsPerPixel()
    has_channels = n_comp > 1
    spatial_axes = list(range(dim))[::-1]
    arr = np.transpose(arr, spatial_axes + ([dim] if has_channels else []))
    direction = np.eye(3)
    spacing = np.ones(3)
    origin = np.zeros(3)
    direction[:dim, :dim] = np.asarray(image.GetDirection()).reshape(dim, dim)
    spacing[:dim] = image.GetSpacing()
    origin[:dim] = image.GetOrigin()
    return Volume(np.ascontiguousarray(arr), affine_from_lps(direction, spacing, origin),
                  has_channels=has_channels, is_label=is_label, meta=dict(meta or {}))


def sitk_from_volume(volume: Volume, *, force_3d: bool = False) -> sitk.Image:
    """A SimpleITK image with the volume's voxels and exact LPS geometry.

    A 2D array becomes a 2D image unless `force_3d`, in which case it gets one slice.
    """
    data = volume.data
    n_sp = data.ndim - int(volume.has_channels)
    if force_3d and n_sp == 2:
        data = data[:, :, None, ...]
        n_sp = 3
    order = list(range(n_sp))[::-1] + ([n_sp] if volume.has_channels else [])
    arr = np.ascontiguousarray(np.transpose(data, order))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    image = sitk.GetImageFromArray(arr, isVector=volume.has_channels)
    direction, spacing, origin = lps_from_affine(volume.affine)
    image.SetDirection(tuple(direction[:n_sp, :n_sp].ravel()))
    image.SetSpacing(tuple(float(s) for s in spacing[:n_sp]))
    image.SetOrigin(tuple(float(o) for o in origin[:n_sp]))
    return image
