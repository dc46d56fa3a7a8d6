"""MRML volume nodes <-> toporeg Volume on real MRML: exact geometry, [k, j, i] vs [i, j, k], storage nodes, masks."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicer.util

from toporeg_slicer_testing import SAMPLE_DATA, blobs, oblique_affine
from toporeg.errors import InputError
from toporeg.io import Volume, load_volume, save_volume
from TopoRegLogic import nodes


def test_volume_node_round_trip_keeps_axes_and_oblique_geometry(mini_slicer):
    data, affine = blobs((9, 11, 13), seed=3), oblique_affine()
    node = nodes.new_volume_node(mini_slicer.scene, Volume(data, affine), "oblique")
    array = slicer.util.arrayFromVolume(node)
    assert array.shape == (13, 11, 9)                            # Slicer: [k, j, i]
    assert array[7, 4, 2] == data[2, 4, 7]
    np.testing.assert_array_equal(nodes.ijk_to_ras(node), affine)
    ras = affine @ np.array([2, 4, 7, 1.0])                     # voxel (2, 4, 7) sits where the affine says
    np.testing.assert_allclose((np.linalg.inv(nodes.ijk_to_ras(node)) @ ras)[:3], [2, 4, 7], atol=1e-9)
    back = nodes.volume_from_node(node)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.affine, affine)
    assert back.meta["name"] == "oblique" and not back.is_label


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_files_written_by_the_library_load_identically_through_slicer_storage(mini_slicer, tmp_path, suffix):
    volume = Volume(blobs((10, 12, 8), seed=1), oblique_affine(spacing=(0.9, 1.3, 2.2)))
    path = save_volume(volume, tmp_path / f"v{suffix}")
    node = nodes.load_volume_node(mini_slicer.scene, path, "v")
    loaded = nodes.volume_from_node(node)
    np.testing.assert_array_equal(loaded.data, volume.data)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-5)  # NIfTI stores float32


def test_bundled_sample_volume_reads_the_same_in_slicer_and_in_the_library(mini_slicer):
    path = SAMPLE_DATA / "mni152_t1_2mm.nii.gz"
    node = nodes.load_volume_node(mini_slicer.scene, path, "MNI152")
    ours, theirs = nodes.volume_from_node(node), load_volume(path)
    assert ours.data.shape == theirs.data.shape == (99, 117, 95)
    np.testing.assert_array_equal(ours.data, theirs.data)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)


def test_updating_a_node_replaces_voxels_and_geometry(mini_slicer):
    node = nodes.new_volume_node(mini_slicer.scene, Volume(np.zeros((4, 5, 6), np.float32), np.eye(4)), "x")
    other = Volume(blobs((7, 6, 5)), oblique_affine())
    nodes.update_volume_node(node, other)
    np.testing.assert_array_equal(nodes.volume_from_node(node).data, other.data)
    np.testing.assert_array_equal(nodes.ijk_to_ras(node), other.affine)


def test_vector_volume_keeps_channels_last(mini_slicer):
    data = np.random.default_rng(0).random((5, 6, 7, 3)).astype(np.float32)
    node = mini_slicer.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "vec")
    nodes.update_volume_node(node, Volume(data, oblique_affine(), has_channels=True))
    back = nodes.volume_from_node(node)
    assert back.has_channels and back.data.shape == (5, 6, 7, 3)
    np.testing.assert_array_equal(back.data, data)


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[2:5, 3:7, 1:4] = 2
    labels[6:8, 1:3, 4:6] = 5
    return labels


def test_labelmap_mask_is_binary_on_its_own_grid(mini_slicer):
    labels, affine = _labels((9, 10, 7)), oblique_affine()
    node = nodes.new_volume_node(mini_slicer.scene, Volume(labels, affine, is_label=True), "labels")
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    mask = nodes.mask_from_node(node, None)
    assert mask.is_label and mask.data.dtype == np.uint8 and mask.meta["name"] == "labels"
    np.testing.assert_array_equal(mask.data, (labels > 0).astype(np.uint8))
    np.testing.assert_array_equal(mask.affine, affine)


def test_segmentation_mask_is_exported_on_the_reference_grid(mini_slicer):
    scene, labels, affine = mini_slicer.scene, _labels((9, 10, 7)), oblique_affine()
    reference = nodes.new_volume_node(scene, Volume(blobs(labels.shape), affine), "reference")
    labelmap = nodes.new_volume_node(scene, Volume(labels, affine, is_label=True), "labels")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    mask = nodes.mask_from_node(segmentation, reference, mini_slicer.logics["Segmentations"])
    np.testing.assert_array_equal(mask.data, (labels > 0).astype(np.uint8))
    np.testing.assert_allclose(mask.affine, affine, atol=1e-9)
    assert not [n for n in slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode", scene)
                if n.GetName().startswith("__toporeg")]


def test_unusable_masks_raise_one_line_input_errors(mini_slicer):
    scene = mini_slicer.scene
    empty = nodes.new_volume_node(scene, Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4), is_label=True), "empty")
    with pytest.raises(InputError, match="mask 'empty' is empty"):
        nodes.mask_from_node(empty, None)
    with pytest.raises(InputError, match="cannot be a mask"):
        nodes.mask_from_node(scene.AddNewNodeByClass("vtkMRMLModelNode", "model"), None)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "blank")
    with pytest.raises(InputError, match="no segments"):
        nodes.mask_from_node(segmentation, empty)


def test_initial_transform_matrix_is_the_resampling_direction(mini_slicer):
    to_parent = np.eye(4)
    to_parent[:3, 3] = [5.0, -3.0, 2.0]
    node = mini_slicer.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "init")
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    np.testing.assert_allclose(nodes.matrix_from_transform_node(node), np.linalg.inv(to_parent))
    grid = mini_slicer.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "grid")
    from TopoRegLogic import transform_nodes

    grid.SetAndObserveTransformFromParent(transform_nodes.grid_transform(np.zeros((3, 3, 3, 3)), np.eye(4)))
    with pytest.raises(InputError, match="not linear"):
        nodes.matrix_from_transform_node(grid)
