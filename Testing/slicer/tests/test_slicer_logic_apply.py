"""RegistrationLogic without (or with a tiny) registration: validation, inputs, apply_results, landmarks, linear models."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from toporeg_slicer_testing import blobs, correlation, oblique_affine, tiny_settings
from toporeg.errors import InputError
from toporeg.io import Volume
from TopoRegLogic import landmarks, nodes
from TopoRegLogic import transform_nodes as tn
from TopoRegLogic.outputs import RegistrationOutputs
from TopoRegLogic.params import RegistrationParams
from TopoRegLogic.registration_logic import RegistrationLogic

SHAPE = (12, 14, 10)


@pytest.fixture
def case(mini_slicer):
    scene, affine = mini_slicer.scene, oblique_affine()
    fixed = nodes.new_volume_node(scene, Volume(blobs(SHAPE, seed=1), affine), "fixed")
    moving = nodes.new_volume_node(scene, Volume(blobs(SHAPE, seed=1), affine), "moving")
    logic = RegistrationLogic(scene, volumes_logic=mini_slicer.volumes_logic)
    return scene, affine, fixed, moving, logic


def _constant_shift(affine, shift):
    return RegistrationOutputs(displacement_ras=np.broadcast_to(np.asarray(shift, float), SHAPE + (3,)).copy(),
                               fixed_affine=affine, warped=None,
                               jacobian=Volume(np.ones(SHAPE, np.float32), affine), folding_percent=0.0,
                               seconds=1.25, transform_model="svf")


@pytest.mark.parametrize("change, message", [
    (dict(fixedVolume=None), "select a fixed and a moving volume"),
    (dict(movingVolume="fixed"), "must be different"),
    (dict(method="dio", transformModel="rigid"), "DIO solver has no rigid transform"),
    (dict(method="carl", topologyAware=True), "topology-aware registration uses the 'optimize' method"),
    (dict(similarity="cc"), "unknown similarity 'cc'"),
    (dict(outputVolume="moving"), "output volume must be a new volume"),
])
def test_bad_parameters_give_one_line_errors(case, change, message):
    scene, _, fixed, moving, logic = case
    values = {k: {"fixed": fixed, "moving": moving}.get(v, v) if isinstance(v, str) and k.endswith("Volume") else v
              for k, v in change.items()}
    params = RegistrationParams(**{"fixedVolume": fixed, "movingVolume": moving, **values})
    with pytest.raises(InputError, match=message) as error:
        logic.validate(params)
    assert "\n" not in str(error.value)


def test_inputs_under_a_foreign_transform_are_refused_but_the_own_output_is_fine(case):
    scene, _, fixed, moving, logic = case
    other = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "other")
    moving.SetAndObserveTransformNodeID(other.GetID())
    with pytest.raises(InputError, match="under transform 'other'"):
        logic.validate(RegistrationParams(fixedVolume=fixed, movingVolume=moving))
    logic.validate(RegistrationParams(fixedVolume=fixed, movingVolume=moving, outputTransform=other))


def test_collect_inputs_reads_masks_and_the_initial_matrix(case):
    scene, affine, fixed, moving, logic = case
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 4:10, 2:8] = 1
    mask = nodes.new_volume_node(scene, Volume(labels, affine, is_label=True), "mask")
    init = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "init")
    to_parent = np.eye(4)
    to_parent[:3, 3] = [1.0, 2.0, 3.0]
    init.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    inputs = logic.collect_inputs(RegistrationParams(fixedVolume=fixed, movingVolume=moving, fixedMask=mask,
                                                     initialTransform=init))
    np.testing.assert_array_equal(inputs["fixed_mask"].data, labels)
    assert inputs["moving_mask"] is None
    np.testing.assert_allclose(inputs["initial"], np.linalg.inv(to_parent))
    np.testing.assert_array_equal(inputs["fixed"].affine, affine)


def test_apply_results_creates_nodes_reports_tre_and_warps_along(case):
    scene, affine, fixed, moving, logic = case
    shift = np.array([3.0, -4.0, 0.0])
    fixed_marks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    moving_marks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "M")
    centre = affine @ np.array([6, 7, 5, 1.0])
    for offset in ([0, 0, 0], [4, 2, -1], [-3, 1, 2]):
        p = centre[:3] + offset
        fixed_marks.AddControlPoint(*p)
        moving_marks.AddControlPoint(*(p + shift + [0.0, 0.0, 1.0]))       # 1 mm residual after registration
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moving seg")
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, fixedLandmarks=fixed_marks,
                                movingLandmarks=moving_marks, warpAlong=(segmentation, moving_marks))
    status = logic.apply_results(params, _constant_shift(affine, shift))
    transform = params.outputTransform
    assert transform is not None and transform.IsA("vtkMRMLGridTransformNode")
    assert segmentation.GetParentTransformNode() is transform and moving_marks.GetParentTransformNode() is transform
    tre = logic.last["tre"]
    np.testing.assert_allclose(tre.after_mm, 1.0, atol=1e-6)
    np.testing.assert_allclose(tre.before_mm, np.linalg.norm(shift + [0, 0, 1.0]), atol=1e-6)
    assert status == ("Done in 1.2 s (svf, cpu): folding 0.000 % of the whole fixed grid; "
                      "TRE 1.00 mm (before 5.10 mm, 3 landmarks)")
    assert params.outputVolume is None and logic.last["volume"] is None


def test_landmark_counts_must_match(case):
    scene, *_ = case
    a = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "a")
    b = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "b")
    a.AddControlPoint(0, 0, 0)
    with pytest.raises(InputError, match="landmark counts differ"):
        landmarks.paired_points(a, b)


def test_tiny_affine_registration_gives_a_linear_transform_that_slicer_resamples_like_the_library(case):
    scene, affine, fixed, _, logic = case
    shifted = np.roll(blobs(SHAPE, seed=1), 1, axis=0)
    moving = nodes.new_volume_node(scene, Volume(shifted, affine), "shifted")
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, transformModel="affine", device="cpu",
                                settings=tiny_settings("affine"), showJacobian=False)
    status = logic.run_in_process(params)
    transform, result = params.outputTransform, logic.last["result"]
    assert transform.IsA("vtkMRMLLinearTransformNode") and "(affine, cpu)" in status
    assert logic.last["jacobian"] is None
    matrix = slicer.util.arrayFromTransformMatrix(transform)                  # ToParent = inverse of FromParent
    np.testing.assert_allclose(np.linalg.inv(matrix), result.affine_ras, atol=1e-6)
    resampled = nodes.volume_from_node(tn.resample_on_fixed(moving, fixed)).data
    coords = result.moving_coords[0].cpu().numpy()
    inside = ((coords >= 1) & (coords <= np.array(SHAPE).reshape(3, 1, 1, 1) - 2)).all(0)
    assert correlation(resampled[inside], result.warped.data[inside]) > 0.999
    assert np.abs(resampled - result.warped.data)[inside].max() < 1e-3
