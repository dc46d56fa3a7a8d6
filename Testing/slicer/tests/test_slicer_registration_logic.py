"""The registration workflow in process, on the bundled sample pair (Colin27 onto MNI152, loaded through Slicer's
storage nodes, every 4th voxel kept for speed), with a tiny budget. One registration, many checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import slicer
import slicer.util

from toporeg_slicer_testing import SAMPLE_DATA, MiniSlicer, correlation, downsampled_node, tiny_settings
from toporeg.transforms import sample
from TopoRegLogic import nodes
from TopoRegLogic import transform_nodes as tn
from TopoRegLogic.params import RegistrationParams
from TopoRegLogic.registration_logic import RegistrationLogic


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mini = MiniSlicer(tmp_path_factory.mktemp("mini"))
    scene = mini.scene
    full_fixed = nodes.load_volume_node(scene, SAMPLE_DATA / "mni152_t1_2mm.nii.gz", "MNI152 2mm")
    full_moving = nodes.load_volume_node(scene, SAMPLE_DATA / "colin27_t1_2mm.nii.gz", "Colin27 2mm")
    fixed = downsampled_node(mini, full_fixed, 4, "MNI152")
    moving = downsampled_node(mini, full_moving, 4, "Colin27")
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, device="cpu", settings=tiny_settings(),
                                outputVolume=scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Colin27 warped"))
    logic = RegistrationLogic(scene, volumes_logic=mini.volumes_logic)
    events = []
    status = logic.run_in_process(params, lambda stage, fraction, message: events.append((stage, fraction)))
    yield SimpleNamespace(mini=mini, scene=scene, fixed=fixed, moving=moving, params=params, logic=logic,
                          status=status, events=events, result=logic.last["result"], last=dict(logic.last))
    mini.close()


def test_output_nodes_have_the_expected_classes_and_links(run):
    transform = run.params.outputTransform
    assert transform is run.last["transform"] and transform.IsA("vtkMRMLGridTransformNode")
    assert transform.GetName() == "Colin27 to MNI152 (TopoReg)"
    assert run.params.outputVolume.IsA("vtkMRMLScalarVolumeNode")
    assert run.last["jacobian"].IsA("vtkMRMLScalarVolumeNode")
    assert run.last["jacobian"].GetDisplayNode().GetColorNode().GetName() == tn.JACOBIAN_COLOR_NAME
    assert run.moving.GetParentTransformNode() is transform                  # instant visual feedback
    assert run.fixed.GetParentTransformNode() is None
    cls = slicer.vtkMRMLTransformNode
    assert transform.GetNodeReference(cls.GetFixedNodeReferenceRole()) is run.fixed
    assert transform.GetNodeReference(cls.GetMovingNodeReferenceRole()) is run.moving


def test_outputs_live_on_the_fixed_grid(run):
    fixed_matrix = nodes.ijk_to_ras(run.fixed)
    for node in (run.params.outputVolume, run.last["jacobian"]):
        np.testing.assert_array_equal(nodes.ijk_to_ras(node), fixed_matrix)
        assert node.GetImageData().GetDimensions() == run.fixed.GetImageData().GetDimensions()
    np.testing.assert_array_equal(nodes.volume_from_node(run.params.outputVolume).data, run.result.warped.data)
    np.testing.assert_array_equal(nodes.volume_from_node(run.last["jacobian"]).data, run.result.jacobian.data)


def test_grid_transform_equals_the_library_displacement(run):
    u = run.result.displacement_ras
    assert u.shape == nodes.volume_from_node(run.fixed).data.shape + (3,)
    np.testing.assert_allclose(slicer.util.arrayFromGridTransform(run.params.outputTransform),
                               u.transpose(2, 1, 0, 3), atol=1e-9)
    assert np.abs(u).max() > 1.0                                              # a real, non-trivial field


def test_slicer_resampling_through_the_result_reproduces_the_library_warp(run):
    resampled = nodes.volume_from_node(tn.resample_on_fixed(run.moving, run.fixed))
    warped = run.result.warped.data
    coords = run.result.moving_coords[0].cpu().numpy()
    upper = np.array(run.result.moving.grid_shape).reshape(3, 1, 1, 1) - 2
    inside = ((coords >= 1) & (coords <= upper)).all(0)
    assert inside.mean() > 0.25
    assert correlation(resampled.data[inside], warped[inside]) > 0.999
    # Slicer's resampler keeps the moving volume's integer voxel type (Colin27 is stored as integers): at most
    # 0.5 rounding; the library's warped image is float32.
    assert not np.issubdtype(nodes.volume_from_node(run.moving).data.dtype, np.floating)
    assert np.abs(resampled.data - warped)[inside].max() <= 0.5 + 1e-3


def test_moving_points_map_to_fixed_space_like_the_library_inverse(run):
    """Slicer's numerical inverse (ToParent) agrees with the library's SVF inverse on the moving grid."""
    inverse = run.result.inverse_displacement_ras
    moving = run.result.moving
    picks = [tuple(int(round(f * n)) for n in moving.grid_shape) for f in (0.35, 0.5, 0.65)]
    points = np.array([moving.voxel_to_ras(p) for p in picks])
    library = points + np.array([inverse[p] for p in picks])
    slicer_points = tn.map_points(points, run.params.outputTransform, to_moving=False)
    assert np.linalg.norm(slicer_points - library, axis=1).max() < 0.25 * moving.spacing.min()
    back = tn.map_points(slicer_points, run.params.outputTransform)          # and FromParent undoes it
    np.testing.assert_allclose(back, points, atol=1e-2)


def test_status_progress_and_folding(run):
    assert run.status.startswith("Done in ") and "folding" in run.status and "%" in run.status
    outputs = run.last["outputs"]
    assert outputs.folding_percent == pytest.approx(100 * run.result.folding_fraction)
    assert f"{outputs.folding_percent:.3f} %" in run.status
    fractions = [f for _, f in run.events]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0.9


def test_moving_coords_are_consistent_with_the_displacement(run):
    """The library's own warp of the moving image at x + u(x) is the warped output (sanity of the bookkeeping)."""
    import torch

    moving = torch.as_tensor(run.result.moving.data[None, None]).float()
    again = sample(moving, run.result.moving_coords.float())[0, 0].numpy()
    np.testing.assert_allclose(again, run.result.warped.data, atol=1e-5)


def test_applying_again_updates_the_same_nodes(run):
    before = run.scene.GetNumberOfNodes()
    status = run.logic.apply_results(run.params, run.last["outputs"])
    assert run.scene.GetNumberOfNodes() == before
    assert run.logic.last["transform"] is run.last["transform"]
    assert run.logic.last["jacobian"] is run.last["jacobian"]
    assert status.startswith("Done in ")
