"""Hand-placed anatomical landmarks and brain masks for the real inter-head pair (Colin27 ↔ pydeface mean head).

How the landmarks were placed: each image was viewed at its native 1 mm resolution as RAS-resampled
planes (sagittal, coronal, axial, 0.5 mm pixels, 1 mm grid lines) and every point was read off where
the structure's edge crosses half its contrast. Colin27 (`ch2.nii.gz`, MNI space) has its midline at
x = 0; the pydeface mean head (`mean_reg2mean.nii.gz`, its own scanner space, pitched forward relative
to Colin) has its midline at x ≈ −4. The mean head is blurred (an average of many heads), so its points
are good to about ±2–3 mm; Colin's to about ±1–2 mm. AC/PC are not visible in the blurred mean, so the
set uses structures that are: corpus callosum ends, frontal-horn tips, the pons and the fourth ventricle.
Coordinates are RAS millimetres in each file's own world space.
"""

from __future__ import annotations

import numpy as np

LANDMARK_NAMES: tuple[str, ...] = (
    "corpus callosum genu, anterior-most edge (midsagittal)",
    "corpus callosum splenium, posterior-most edge (midsagittal)",
    "left lateral ventricle frontal horn, anterior tip",
    "right lateral ventricle frontal horn, anterior tip",
    "pons, anterior-most edge of the ventral bulge (midsagittal)",
    "fourth ventricle fastigium (posterior apex, midsagittal)",
)

COLIN27_RAS = np.array([
    [0.0, 35.5, 4.5],
    [0.0, -37.0, 19.0],
    [-15.5, 31.0, 6.0],
    [16.5, 29.5, 3.0],
    [0.0, -13.5, -32.0],
    [0.0, -47.5, -27.5],
])

PYDEFACE_MEAN_RAS = np.array([
    [-4.0, 46.0, 5.0],
    [-4.0, -25.5, 7.0],
    [-16.0, 44.0, 4.0],
    [12.0, 42.0, 1.5],
    [-4.0, 8.0, -27.0],
    [-4.0, -26.0, -33.0],
])

# Brain masks are cut at the same anatomical level in both heads: the axial plane 20 mm below the
# fourth-ventricle fastigium (the last landmark), so the brainstem is scored to the same depth.
CUT_BELOW_FASTIGIUM_MM = 20.0
COLIN27_CUT_Z = float(COLIN27_RAS[5, 2] - CUT_BELOW_FASTIGIUM_MM)
PYDEFACE_CUT_Z = float(PYDEFACE_MEAN_RAS[5, 2] - CUT_BELOW_FASTIGIUM_MM)

# Rough brain mask of the pydeface mean head (no mask ships with it): threshold at 0.40 of the 99.5th
# intensity percentile (between CSF and grey matter in this blurred mean), cut below PYDEFACE_CUT_Z,
# erode 3 voxels (at 2 mm) to cut the bridges to scalp and neck, keep the largest component, dilate 3
# voxels, close 3, fill holes in 3D and per axial slice, then dilate 1 voxel to take in the thin CSF
# layer that Colin's BET mask (`ch2bet`) also contains. Checked visually on sagittal/coronal/axial slices.
PYDEFACE_MASK_THRESHOLD = 0.40
PYDEFACE_MASK_MORPH_ITERATIONS = 3
PYDEFACE_MASK_FINAL_DILATION = 1


def rough_brain_mask(data: np.ndarray, z_ras: np.ndarray, cut_z: float, threshold: float = PYDEFACE_MASK_THRESHOLD,
                     iterations: int = PYDEFACE_MASK_MORPH_ITERATIONS,
                     final_dilation: int = PYDEFACE_MASK_FINAL_DILATION) -> np.ndarray:
    """Threshold + morphology brain mask of a T1 head (see the comment above); `z_ras` = each voxel's RAS z."""
    from scipy import ndimage as ndi

    above = z_ras > cut_z
    mask = (data / np.percentile(data, 99.5) > threshold) & above
    mask = ndi.binary_erosion(mask, iterations=iterations)
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    mask = labels == int(np.argmax(sizes)) + 1
    mask = ndi.binary_dilation(mask, iterations=iterations) & above
    mask = ndi.binary_closing(mask, iterations=iterations) & above
    mask = ndi.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    if final_dilation:
        mask = ndi.binary_dilation(mask, iterations=final_dilation) & above
    return mask
