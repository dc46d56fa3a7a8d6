"""Displacement field -> grid transform node, on real MRML, with an analytic field on oblique grids.

The direction is the point: a FromParent displacement u must make Slicer resample (and harden) the moving
volume as moving(x + u(x)), which is what the library computes with `toporeg.transforms.sample`.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicer.util
import torch

from toporeg_slicer_testing import blobs, correlation, oblique_affine
from toporeg.geometry import resample_to
from toporeg.io import Volume
from toporeg.transforms import sample
from TopoRegLogic import nodes
from TopoRegLogic import transform_nodes as tn
from TopoRegLogic.outputs import RegistrationOutputs

FIXED_SHAPE, MOVING_SHAPE = (16, 18, 13), (17, 15, 14)


@pytest.fixture
def field_case(mini_slicer):
    """Fixed and moving volumes on different oblique grids, a smooth field u (RAS mm) on the fixed grid."""
    fixed_affine = oblique_affine()
    moving_affine = oblique_affine(spacing=(1.9, 2.1, 2.4), angles=(0.25, -0.1, 0.45), origin=(-18.0, 14.0, 6.0))
    moving_image = blobs(MOVING_SHAPE, seed=2)
    ras = np.einsum("rc,c...->...r", fixed_affine[:3, :3], np.indices(FIXED_SHAPE).astype(float)) + fixed_affine[:3, 3]
    u = np.stack([2.0 * np.sin(ras[..., 1] / 15.0), 1.5 * np.cos(ras[..., 0] / 12.0), 1.0 + 0.05 * ras[..., 2]], -1)
    inverse = np.linalg.inv(moving_affine)
    voxels = (ras + u) @ inverse[:3, :3].T + inverse[:3, 3]    # moving voxel hit by each fixed voxel
    coords = torch.as_tensor(np.moveaxis(voxels, -1, 0)[None]).float()
    warped = sample(torch.as_tensor(moving_image)[None, None], coords)[0, 0].numpy()
    inside = (voxels >= 1).all(-1) & (voxels <= np.array(MOVING_SHAPE) - 2).all(-1)
    scene = mini_slicer.scene
    fixed = nodes.new_volume_node(scene, Volume(blobs(FIXED_SHAPE, seed=1), fixed_affine), "fixed")
    moving = nodes.new_volume_node(scene, Volume(moving_image, moving_affine), "moving")
    outputs = RegistrationOutputs(displacement_ras=u, fixed_affine=fixed_affine, transform_model="svf")
    transform = tn.write_transform(scene, outputs)
    return dict(scene=scene, fixed=fixed, moving=moving, u=u, ras=ras, warped=warped, inside=inside,
                transform=transform, fixed_affine=fixed_affine)


def test_grid_node_holds_the_field_in_slicer_order_and_ras(field_case):
    transform, u = field_case["transform"], field_case["u"]
    assert transform.IsA("vtkMRMLGridTransformNode")
    array = slicer.util.arrayFromGridTransform(transform)
    assert array.shape == FIXED_SHAPE[::-1] + (3,)                     # [k, j, i, component]
    np.testing.assert_allclose(array, u.transpose(2, 1, 0, 3))
    np.testing.assert_allclose(tn.displacement_from_node(transform), u)
    grid = transform.GetTransformFromParent().GetDisplacementGrid()
    np.testing.assert_allclose(grid.GetSpacing(), np.linalg.norm(field_case["fixed_affine"][:3, :3], axis=0))
    x = field_case["ras"][3, 5, 7]                                         # FromParent(x) = x + u(x)
    np.testing.assert_allclose(tn.map_points(x, transform)[0], x + u[3, 5, 7], atol=1e-6)


def test_resampling_the_moving_volume_through_the_node_equals_the_library_warp(field_case):
    tn.apply_to_moving(field_case["moving"], field_case["transform"])
    resampled = tn.resample_on_fixed(field_case["moving"], field_case["fixed"])
    out = nodes.volume_from_node(resampled)
    np.testing.assert_allclose(out.affine, field_case["fixed_affine"], atol=1e-9)
    inside, warped = field_case["inside"], field_case["warped"]
    assert inside.mean() > 0.4
    assert np.abs(out.data - warped)[inside].max() < 1e-4
    assert correlation(out.data[inside], warped[inside]) > 0.9999


def test_the_opposite_direction_would_be_wrong(field_case):
    """Guard against a silent flip: the same field as ToParent resamples the moving image very differently."""
    scene = field_case["scene"]
    wrong = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "wrong")
    wrong.SetAndObserveTransformToParent(tn.grid_transform(field_case["u"], field_case["fixed_affine"]))
    tn.apply_to_moving(field_case["moving"], wrong)
    out = nodes.volume_from_node(tn.resample_on_fixed(field_case["moving"], field_case["fixed"]))
    inside = field_case["inside"]
    assert np.abs(out.data - field_case["warped"])[inside].max() > 0.05


def test_hardening_the_moving_volume_reproduces_the_library_warp(field_case, mini_slicer):
    moving = field_case["moving"]
    tn.apply_to_moving(moving, field_case["transform"])
    assert mini_slicer.logics["Transforms"].hardenTransform(moving)
    assert moving.GetParentTransformNode() is None
    hardened = nodes.volume_from_node(moving)     # on a grown lattice: sample it at the fixed voxel centres
    on_fixed = resample_to(hardened, Volume(np.zeros(FIXED_SHAPE, np.float32), field_case["fixed_affine"]))
    inside = field_case["inside"]
    assert correlation(on_fixed.data[inside], field_case["warped"][inside]) > 0.99
    assert np.abs(on_fixed.data - field_case["warped"])[inside].mean() < 0.01


def test_points_under_the_node_move_from_moving_to_fixed_space(field_case):
    """Markups under the transform use ToParent, Slicer's inverse of the grid: q = x + u(x) goes back to x."""
    transform, ras, u, scene = field_case["transform"], field_case["ras"], field_case["u"], field_case["scene"]
    picks = [(4, 6, 5), (8, 9, 6), (11, 12, 8)]
    fixed_points = np.array([ras[p] for p in picks])
    moving_points = np.array([ras[p] + u[p] for p in picks])
    np.testing.assert_allclose(tn.map_points(moving_points, transform, to_moving=False), fixed_points, atol=1e-3)
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "moving points")
    for q in moving_points:
        markups.AddControlPoint(*q)
    tn.warp_along([markups], transform)
    world = np.array([markups.GetNthControlPointPositionWorld(i) for i in range(len(picks))])
    np.testing.assert_allclose(world, fixed_points, atol=1e-3)


def test_linear_outputs_become_a_linear_transform_in_the_resampling_direction(mini_slicer):
    scene, affine = mini_slicer.scene, oblique_affine()
    matrix = np.eye(4)
    matrix[:3, 3] = [4.0, -2.0, 3.0]
    outputs = RegistrationOutputs(displacement_ras=np.zeros((4, 4, 4, 3)), fixed_affine=affine, affine_ras=matrix,
                                  transform_model="rigid")
    node = tn.write_transform(scene, outputs)
    assert node.IsA("vtkMRMLLinearTransformNode")
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(tn.map_points(x, node)[0], x + matrix[:3, 3])


def test_jacobian_overlay_uses_one_shared_colour_node(mini_slicer):
    scene = mini_slicer.scene
    jac = Volume(np.linspace(-0.5, 2.5, 60, dtype=np.float32).reshape(3, 4, 5), oblique_affine())
    first = tn.write_jacobian(scene, jac, name="J1")
    second = tn.write_jacobian(scene, jac, name="J2")
    display = first.GetDisplayNode()
    assert display.GetColorNode().GetName() == tn.JACOBIAN_COLOR_NAME
    assert second.GetDisplayNode().GetColorNodeID() == display.GetColorNodeID()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 2.0) and not display.GetAutoWindowLevel()
    lut = display.GetColorNode().GetColorTransferFunction()
    assert lut.GetColor(0.0)[0] > 0.8 and lut.GetColor(0.0)[2] < 0.1      # folding is red
    np.testing.assert_array_equal(nodes.volume_from_node(first).data, jac.data)


def test_reference_roles_are_slicers_registration_roles(field_case):
    transform = field_case["transform"]
    tn.set_reference_roles(transform, field_case["fixed"], field_case["moving"])
    cls = slicer.vtkMRMLTransformNode
    assert transform.GetNodeReference(cls.GetFixedNodeReferenceRole()) is field_case["fixed"]
    assert transform.GetNodeReference(cls.GetMovingNodeReferenceRole()) is field_case["moving"]
    assert cls.GetMovingNodeReferenceRole() == "spatialRegistrationMoving"
