"""MRML volume nodes <-> `toporeg.io.Volume`, with exact geometry.

Geometry: a node's IJKToRAS matrix *is* `Volume.affine` (voxel index (i, j, k, 1) -> RAS mm).
Array order: `slicer.util.arrayFromVolume` returns `[k, j, i]` (VTK's x fastest), `Volume.data` is
`[i, j, k]`, so voxels are transposed with `(2, 1, 0)` both ways (and `(2, 1, 0, 3)` for vectors).

Parent transforms are *not* folded into the geometry: the registration logic refuses inputs under a
transform (other than its own output), so node coordinates and world coordinates coincide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import slicer.util
import vtk

LABELMAP_CLASS = "vtkMRMLLabelMapVolumeNode"
SCALAR_CLASS = "vtkMRMLScalarVolumeNode"


def _volume_type():
    from toporeg.io.volume import Volume  # lazy: the module loads before dependencies are installed

    return Volume


def input_error(problem: str):
    """`toporeg.errors.InputError` when the library is importable, else a plain ValueError."""
    try:
        from toporeg.errors import InputError
    except ImportError:  # pragma: no cover - only before the dependencies are installed
        return ValueError(problem)
    return InputError(problem)


def scene_nodes(scene, class_name: str) -> list:
    """Nodes of `class_name` (and subclasses) in `scene` itself, in scene order.

    Why not `slicer.util.getNodesByClass(cls, scene)`: slicer-core's version ignores `scene` and always searches
    `slicer.mrmlScene`, so a logic given another scene (batch scripts, tests, a second scene) would edit the wrong one.
    """
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(scene)  # the method hands over a reference, as slicer.util notes
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def set_ijk_to_ras(node, affine: np.ndarray) -> None:
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(affine, dtype=np.float64)))


def is_labelmap(node) -> bool:
    return node is not None and node.IsA(LABELMAP_CLASS)


def volume_from_node(node, *, is_label: bool | None = None):
    """A `Volume` holding a copy of the node's voxels ([i, j, k] order) and its IJKToRAS matrix."""
    if node is None:
        raise input_error("no volume selected")
    if node.GetImageData() is None:
        raise input_error(f"volume '{node.GetName()}' has no image data")
    array = slicer.util.arrayFromVolume(node)
    axes = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    data = np.ascontiguousarray(array.transpose(axes))
    label = is_labelmap(node) if is_label is None else is_label
    return _volume_type()(data, ijk_to_ras(node), has_channels=array.ndim == 4, is_label=label,
                          meta={"name": node.GetName(), "node_id": node.GetID()})


def update_volume_node(node, volume) -> None:
    """Replace the node's voxels and geometry with `volume`'s (2D images become one-slice volumes)."""
    data = np.asarray(volume.data)
    if volume.has_channels:
        if data.ndim == 3:
            data = data[:, :, None, :]
        array = data.transpose(2, 1, 0, 3)
    else:
        if data.ndim == 2:
            data = data[:, :, None]
        array = data.transpose(2, 1, 0)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    was = node.StartModify()
    set_ijk_to_ras(node, volume.affine)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.EndModify(was)


def snap_to_grid(volume, node, what: str):
    """A CLI output written on `node`'s grid: check it is, then give it the node's exact IJKToRAS (NIfTI keeps the
    matrix in float32 only, the node has it in double)."""
    dims, shape = node.GetImageData().GetDimensions(), tuple(volume.spatial_shape) + (1,) * 3
    if tuple(shape[:3]) != tuple(dims) or not np.allclose(volume.affine, ijk_to_ras(node), atol=1e-3):
        raise input_error(f"{what} is not on the grid of '{node.GetName()}' ({shape[:3]} vs {tuple(dims)})")
    volume.affine = ijk_to_ras(node)
    return volume


def new_volume_node(scene, volume, name: str, *, label: bool | None = None):
    """Add a scalar (or labelmap) volume node holding `volume` to `scene`."""
    label = volume.is_label if label is None else label
    node = scene.AddNewNodeByClass(LABELMAP_CLASS if label else SCALAR_CLASS, scene.GenerateUniqueName(name))
    update_volume_node(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


def ensure_volume_node(scene, node, name: str, volume):
    """Write `volume` into `node` (created when None) and return the node."""
    if node is None:
        return new_volume_node(scene, volume, name)
    update_volume_node(node, volume)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def mask_from_node(node, reference, segmentations_logic=None):
    """A uint8 0/1 mask `Volume` from a labelmap volume (any grid) or a segmentation node.

    Segmentations are exported (visible or not, all segments) onto `reference`'s grid through
    `vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode`; the temporary labelmap is removed.
    """
    if node is None:
        return None
    if node.IsA("vtkMRMLSegmentationNode"):
        scene = node.GetScene()
        ids = vtk.vtkStringArray()
        node.GetSegmentation().GetSegmentIDs(ids)
        if ids.GetNumberOfValues() == 0:
            raise input_error(f"segmentation '{node.GetName()}' has no segments to use as a mask")
        labelmap = scene.AddNewNodeByClass(LABELMAP_CLASS, "__toporeg_mask_export")
        try:
            logic = segmentations_logic or slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference):
                raise input_error(f"cannot export segmentation '{node.GetName()}' as a mask")
            volume = volume_from_node(labelmap, is_label=True)
        finally:
            scene.RemoveNode(labelmap)
    elif node.IsA("vtkMRMLVolumeNode"):
        volume = volume_from_node(node, is_label=True)
    else:
        raise input_error(f"'{node.GetName()}' cannot be a mask (use a labelmap volume or a segmentation)")
    mask = (volume.data > 0).astype(np.uint8)
    if not mask.any():
        raise input_error(f"mask '{node.GetName()}' is empty")
    result = volume.with_data(mask, is_label=True)
    result.meta["name"] = node.GetName()
    return result


def matrix_from_transform_node(node, *, direction: str = "from_parent") -> np.ndarray:
    """4x4 RAS matrix of a linear transform node; `from_parent` is the resampling direction
    (fixed point -> moving point when the moving volume sits under the transform)."""
    if node is None:
        return np.eye(4)
    if not node.IsLinear():
        raise input_error(f"initial transform '{node.GetName()}' is not linear")
    matrix = vtk.vtkMatrix4x4()
    if direction == "from_parent":
        node.GetMatrixTransformFromParent(matrix)
    else:
        node.GetMatrixTransformToParent(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def load_volume_node(scene, path: str | Path, name: str | None = None, *, label: bool = False):
    """Read an image file into a new volume node through Slicer's own storage node (no `slicer.app`)."""
    path = Path(path)
    node = scene.AddNewNodeByClass(LABELMAP_CLASS if label else SCALAR_CLASS,
                                   scene.GenerateUniqueName(name or path.name.split(".")[0]))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise input_error(f"{path}: cannot read image")
    node.CreateDefaultDisplayNodes()
    return node
