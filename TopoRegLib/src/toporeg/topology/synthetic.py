"""Synthetic topological changes with exact change masks: the data of `toporeg bench topology` (issue #5).

Every generator takes torch tensors (1, 1, *S) or numpy arrays (*S), 2D or 3D, returns torch tensors (1, 1, *S)
(masks bool), and draws all its randomness from one seeded `RandomFields` (the training augmenters' RNG; an int
seed is accepted), so a seed fixes a case. Intensities are assumed in [0, 1] (the template cache's normalisation).

A change mask marks every voxel whose content was *replaced*: outside it, and without deformation, the output is
bit-identical to the input. A pair is fixed J = changed image, deformed and with new intensities, and moving I =
the original (shared/CONVENTIONS.md: J(x) = changed(x + u(x)), displacements in voxels); the mask follows the
deformation onto the fixed grid by a linear warp thresholded at 0.5.

Modules: `synthetic_common` (RNG, tensors, masks, blobs), `synthetic_changes` (lesion, resection, ventricle),
`synthetic_pairs` (`TopologyCase`, nuisance deformation and intensity change), `synthetic_brain` (template cases,
outlier sets, validation pairs), `synthetic_cells` (2D cell-like pairs). Every public name is importable from here.
"""

from __future__ import annotations

from .synthetic_brain import brain_cases, control_and_outlier_sets, template_arrays, validation_pairs
from .synthetic_cells import cell_cases, cell_pair_2d
from .synthetic_changes import (BRAIN_KINDS, fluid_value, insert_lesion, insert_resection, mass_effect_field,
                                ventricle_change, ventricles)
from .synthetic_common import Range, Rng, as_rng, dilate, random_blob
from .synthetic_pairs import TopologyCase, deform, random_intensity_change, random_smooth_deformation

__all__ = [
    "BRAIN_KINDS", "Range", "Rng", "TopologyCase", "as_rng", "brain_cases", "cell_cases", "cell_pair_2d",
    "control_and_outlier_sets", "deform", "dilate", "fluid_value", "insert_lesion", "insert_resection",
    "mass_effect_field", "random_blob", "random_intensity_change", "random_smooth_deformation", "template_arrays",
    "validation_pairs", "ventricle_change", "ventricles",
]
