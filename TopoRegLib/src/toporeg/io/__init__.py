"""Volumes and their files: geometry-exact load/save for NIfTI, NRRD, MHA/MHD, .seg.nrrd and DICOM series."""

from .atomic import atomic_directory, atomic_path
from .formats import SUPPORTED, load_volume, save_volume
from .validate import check_geometry, check_intensities, check_spatial_ndim
from .volume import Volume, affine_from_lps, lps_from_affine

__all__ = [
    "SUPPORTED", "Volume", "affine_from_lps", "atomic_directory", "atomic_path", "check_geometry",
    "check_intensities", "check_spatial_ndim", "load_volume", "lps_from_affine", "save_volume",
]
