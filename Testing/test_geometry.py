"""Resampling, canonical orientation, pad/crop and normalisation keep physical geometry exact."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import oblique_affine, smooth_blobs
from toporeg.geometry import (from_canonical, pad_to_multiple, percentile_normalize, resample_to,
                              resample_to_spacing, to_canonical, undo_pad_crop)
from toporeg.io import Volume


def test_resample_onto_own_grid_is_identity(oblique_volume):
    out = resample_to(oblique_volume, oblique_volume)
    assert np.abs(out.data - oblique_volume.data).max() < 1e-5
    np.testing.assert_array_equal(out.affine, oblique_volume.affine)


def test_resample_onto_shifted_grid_moves_by_whole_voxels():
    vol = Volume(smooth_blobs((12, 14, 10)), np.diag([2.0, 2.0, 3.0, 1.0]))
    ref_aff = vol.affine.copy()
    ref_aff[:3, 3] += [4.0, 0.0, -3.0]         # reference voxel 0 sits at source voxel (2, 0, -1)
    ref = Volume(np.zeros((8, 14, 9), np.float32), ref_aff)
    out = resample_to(vol, ref)
    np.testing.assert_allclose(out.data[:, :, 1:], vol.data[2:10, :, :8], atol=1e-5)
    assert np.abs(out.data[:, :, 0]).max() < 1e-6  # outside the source: filled with 0


def test_labels_resample_with_nearest_neighbour():
    labels = Volume(np.random.default_rng(0).integers(0, 5, (10, 10, 10)).astype(np.uint8), np.eye(4), is_label=True)
    out = resample_to_spacing(labels, 0.5)
    assert out.data.dtype == np.uint8 and set(np.unique(out.data)) <= set(range(5))
    assert out.grid_shape == (19, 19, 19)
    np.testing.assert_allclose(out.voxel_to_ras([2, 2, 2]), [1, 1, 1])


@pytest.mark.parametrize("affine", [oblique_affine(), np.diag([-1.0, 1.0, -2.0, 1.0]),
                                    np.array([[0, 0, -1.5, 10], [1.0, 0, 0, -5], [0, 2.0, 0, 3], [0, 0, 0, 1]])])
def test_canonical_reorientation_preserves_physical_positions_and_undoes(affine):
    vol = Volume(smooth_blobs((6, 7, 8)), affine)
    can, how = to_canonical(vol)
    assert can.orientation_code == "RAS"
    # the same physical point carries the same intensity
    ijk = np.array([2, 3, 4])
    ras = vol.voxel_to_ras(ijk)
    back_ijk = np.round(can.ras_to_voxel(ras)).astype(int)
    assert can.data[tuple(back_ijk)] == vol.data[tuple(ijk)]
    undone = from_canonical(can, how)
    assert np.array_equal(undone.data, vol.data) and np.allclose(undone.affine, vol.affine)


def test_pad_to_multiple_and_undo_is_exact_and_keeps_geometry(oblique_volume):
    padded, how = pad_to_multiple(oblique_volume, 16)
    assert all(n % 16 == 0 for n in padded.grid_shape)
    src = (3, 4, 5)
    before = np.array([b for b, _ in how.amounts])
    np.testing.assert_allclose(padded.voxel_to_ras(np.add(src, before)), oblique_volume.voxel_to_ras(src), atol=1e-9)
    undone = undo_pad_crop(padded, how)
    assert np.array_equal(undone.data, oblique_volume.data) and np.allclose(undone.affine, oblique_volume.affine)


def test_percentile_normalisation_maps_percentiles_to_unit_range():
    data = np.linspace(0, 100, 1001, dtype=np.float32)
    out = percentile_normalize(data, 1, 99)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[500] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="constant"):
        percentile_normalize(np.ones(10))


@pytest.mark.parametrize("affine", [
    np.array([[-1.0, 0, 0, 4], [0, 0, 1, 5], [0, -2.0, 0, 3], [0, 0, 0, 1]]),   # coronal slice: i → L, j → I
    np.array([[0, 0, 1.0, 0], [0, 1.5, 0, 2], [-1.0, 0, 0, 7], [0, 0, 0, 1]]),   # sagittal slice: i → I, j → A
    np.array([[0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]]),   # axial slice, axes swapped
])
def test_2d_canonical_reorientation_keeps_the_plane_and_undoes(affine):
    vol = Volume(smooth_blobs((6, 7, 1))[:, :, 0], affine)
    can, how = to_canonical(vol)
    assert can.data.ndim == 2 and abs(np.linalg.det(can.affine)) > 1e-6
    in_plane = can.affine[:3, :2]
    assert np.all(np.abs(in_plane).argmax(axis=0) == np.sort(np.abs(in_plane).argmax(axis=0)))
    assert np.all(in_plane[np.abs(in_plane).argmax(axis=0), [0, 1]] > 0)   # both in-plane axes point R/A/S-wards
    for ij in [(0, 0), (2, 3), (5, 6)]:
        ras = affine[:3, :3] @ np.array([*ij, 0.0]) + affine[:3, 3]
        back = np.linalg.solve(can.affine[:3, :3], ras - can.affine[:3, 3])
        assert np.allclose(back[2], 0) and can.data[tuple(np.round(back[:2]).astype(int))] == vol.data[ij]
    undone = from_canonical(can, how)
    assert np.array_equal(undone.data, vol.data) and np.allclose(undone.affine, vol.affine)
