"""Registration results as MRML transform nodes, overlays, and nodes warped along.

Direction (checked by the tests by hardening and resampling): the library's displacement `u` maps a fixed
point to its moving point, `x_moving = x_fixed + u(x_fixed)` (RAS mm, on the fixed grid). It is stored
as the grid transform's **FromParent** transform (`SetAndObserveTransformFromParent`). A volume placed
under the node is then resampled as `moving(x + u(x))`, i.e. it lands on the fixed image, exactly as
`RegistrationResult.warped`. Points (markups, models, segment surfaces) under the node go through
ToParent, Slicer's numerical inverse of the grid (fixed <- moving), so moving-space landmarks also land
on their fixed-space positions. Linear models (rigid/affine) become a linear transform whose
FromParent matrix is `RegistrationResult.affine_ras` (fixed point -> moving point).
"""

from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from . import nodes

JACOBIAN_COLOR_NAME = "TopoReg Jacobian"


def grid_transform(u_ras: np.ndarray, fixed_affine: np.ndarray):
    """A `vtkOrientedGridTransform` holding `u_ras` ((I, J, K, 3) or (I, J, 3), RAS mm) on the fixed grid."""
    u = np.asarray(u_ras, dtype=np.float64)
    if u.ndim == 3:  # 2D grid: one slice
        u = u[:, :, None, :]
    size = u.shape[:3]
    affine = np.asarray(fixed_affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = np.eye(4)
    direction[:3, :3] = affine[:3, :3] / spacing
    image = vtk.vtkImageData()
    image.SetDimensions(*size)
    image.SetOrigin(*affine[:3, 3])
    image.SetSpacing(*spacing)
    vectors = numpy_support.numpy_to_vtk(np.ascontiguousarray(u.transpose(2, 1, 0, 3)).reshape(-1, 3),
                                         deep=True, array_type=vtk.VTK_DOUBLE)
    vectors.SetName("displacement")
    image.GetPointData().SetScalars(vectors)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetGridDirectionMatrix(slicer.util.vtkMatrixFromArray(direction))
    transform.SetInterpolationModeToLinear()
    return transform


def displacement_from_node(node) -> np.ndarray:
    """(I, J, K, 3) RAS-mm copy of a grid transform node's FromParent displacement (inverse of `grid_transform`)."""
    return np.array(slicer.util.arrayFromGridTransform(node).transpose(2, 1, 0, 3))


def _ensure_transform_node(scene, node, class_name: str, name: str):
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    return node


def set_reference_roles(transform_node, fixed_node, moving_node) -> None:
    """Slicer's standard registration roles (as SlicerElastix): spatialRegistrationFixed / ...Moving."""
    cls = slicer.vtkMRMLTransformNode
    transform_node.SetNodeReferenceID(cls.GetFixedNodeReferenceRole(), fixed_node.GetID() if fixed_node else None)
    transform_node.SetNodeReferenceID(cls.GetMovingNodeReferenceRole(), moving_node.GetID() if moving_node else None)


def write_transform(scene, outputs, *, node=None, name: str = "TopoReg transform"):
    """Create or update the output transform node from `outputs` (a `RegistrationOutputs`).

    Deformable models -> grid transform (FromParent = u); linear models -> linear transform
    (FromParent = affine_ras). A user-chosen node of either class receives whichever transform it is.
    """
    if outputs.is_linear and outputs.affine_ras is not None:
        node = _ensure_transform_node(scene, node, "vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformFromParent(slicer.util.vtkMatrixFromArray(outputs.affine_ras))
    else:
        node = _ensure_transform_node(scene, node, "vtkMRMLGridTransformNode", name)
        node.SetAndObserveTransformFromParent(grid_transform(outputs.displacement_ras, outputs.fixed_affine))
    node.SetAttribute("TopoReg.FoldingPercent", f"{outputs.folding_percent:.6g}")
    node.SetAttribute("TopoReg.TransformModel", outputs.transform_model)
    return node


def apply_to_moving(moving_node, transform_node) -> None:
    """Put the moving volume under the result for instant visual feedback (nothing is resampled)."""
    moving_node.SetAndObserveTransformNodeID(transform_node.GetID() if transform_node else None)


def warp_along(transformable_nodes, transform_node) -> None:
    """Place moving-space segmentations / markups / models under the result (see module docstring)."""
    for node in transformable_nodes:
        if node is not None:
            node.SetAndObserveTransformNodeID(transform_node.GetID())


def resample_on_fixed(moving_node, fixed_node):
    """Slicer's own resampling of the moving volume (through its parent transform) onto the fixed grid.

    Returns a new scalar volume node, which Slicer adds to the scene (`vtkSlicerVolumesLogic` static helper).
    The module's output volume is the library's warped image instead (identical for in-process and
    background runs, no second interpolation); the tests check that both agree.
    """
    return slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(moving_node, fixed_node)


def map_points(points_ras: np.ndarray, transform_node, *, to_moving: bool = True) -> np.ndarray:
    """Map (N, 3) RAS points through the node: fixed -> moving (FromParent, x + u(x)) or the inverse."""
    transform = transform_node.GetTransformFromParent() if to_moving else transform_node.GetTransformToParent()
    return np.array([transform.TransformPoint(*map(float, p)) for p in np.atleast_2d(points_ras)])


def jacobian_color_node(scene):
    """A shared procedural colour node for Jacobian determinants: <= 0 (folding) red, 1 grey, > 1 blue."""
    for node in nodes.scene_nodes(scene, "vtkMRMLProceduralColorNode"):
        if node.GetName() == JACOBIAN_COLOR_NAME:
            return node
    node = scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", JACOBIAN_COLOR_NAME)
    node.SetAttribute("Category", "TopoReg")
    ctf = vtk.vtkColorTransferFunction()
    for value, rgb in ((0.0, (0.85, 0.0, 0.0)), (0.5, (1.0, 0.75, 0.1)), (1.0, (0.6, 0.6, 0.6)),
                       (1.5, (0.35, 0.65, 1.0)), (2.0, (0.0, 0.2, 0.9))):
        ctf.AddRGBPoint(value, *rgb)
    node.SetAndObserveColorTransferFunction(ctf)
    return node


def write_jacobian(scene, jacobian_volume, *, node=None, name: str = "TopoReg Jacobian"):
    """The Jacobian determinant on the fixed grid as a scalar volume with the Jacobian colour map, window [0, 2]."""
    node = nodes.ensure_volume_node(scene, node, name, jacobian_volume.astype(np.float32))
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAndObserveColorNodeID(jacobian_color_node(scene).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 2.0)
    return node
