"""Spatial-transform core: sampling, warps, SVF integration, composition, Jacobians, affine and physical fields."""

from .affine import (affine_coordinates, affine_displacement, physical_matrix, rotation_matrix, spatial_block,
                     voxel_matrix)
from .fields import (itk_displacement_volume, moving_coordinates, physical_displacement, physical_from_itk_volume,
                     voxel_displacement_from_physical)
from .integration import compose, integrate_svf, invert_displacement, invert_svf
from .jacobian import folding_fraction, jacobian_determinant, jacobian_matrix
from .sampling import identity_grid, resize_displacement, sample, warp, warp_labels

__all__ = [
    "affine_coordinates", "affine_displacement", "compose", "folding_fraction", "identity_grid", "integrate_svf",
    "invert_displacement", "invert_svf", "itk_displacement_volume", "jacobian_determinant", "jacobian_matrix", "moving_coordinates",
    "physical_displacement", "physical_from_itk_volume", "physical_matrix", "resize_displacement", "rotation_matrix",
    "sample", "spatial_block", "voxel_displacement_from_physical", "voxel_matrix", "warp", "warp_labels",
]
