"""Context sets of the Neuralizer panel: (image, output) node pairs the user picks from the scene, kept as named sets
in the MRML scene (saved with it) and as JSON files in a user folder or anywhere for sharing.

- In the scene (SlicerMultiverSeg's idea, but never under the extension folder): one `vtkMRMLScriptedModuleNode`
  per set, named after it, marked by the attribute `TopoReg.NeuralizerContextSet`; pair i is the node references
  `contextImage_i` / `contextOutput_i` (indexed roles, so deleting one node drops only its own pair) and the settings
  are parameters. No `ModuleName` attribute: the module's own parameter node lookup never finds these.
- As JSON: the library's `toporeg.neuralizer.context_sets.ContextSet` (format `toporeg-context-set/1`, paths relative
  to the JSON file). Nodes read from a file and not edited since keep pointing at it; every other node is written as
  NIfTI into `<json stem>_files/` next to the JSON, so the set still works in a later session or on another machine.

Outputs: a labelmap or scalar volume as it is; a segmentation becomes a label map on its image's grid in which each
segment carries its own label value (`vtkSegment.GetLabelValue`, the value the Segmentations module shows).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from . import nodes
from .nodes import scene_nodes  # re-exported: callers used contexts.scene_nodes

SET_ATTRIBUTE = "TopoReg.NeuralizerContextSet"
IMAGE_ROLE, OUTPUT_ROLE = "contextImage_", "contextOutput_"
FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")  # what toporeg.io reads as one file
SEGMENTATION_CLASS = "vtkMRMLSegmentationNode"


@dataclass
class ContextSelection:
    """What a context set holds: its name, the (image node, output node) pairs and the run settings that define the
    task (`labelValue` None: any non-zero label; `contextSize` None: the model card's maximum)."""

    name: str = ""
    pairs: list = field(default_factory=list)
    task: str = "segment"
    labelValue: int | None = None
    plane: str = "axial"
    contextSize: int | None = None
    dropped: int = 0  # pairs whose nodes are gone (deleted from the scene) when the set was read


def default_folder() -> Path:
    """The user's context-set folder: $TOPOREG_CONTEXT_SETS, else ~/.local/share/toporeg/context_sets (user data,
    never the extension's install folder, which may be read-only and is replaced on update)."""
    env = os.environ.get("TOPOREG_CONTEXT_SETS")
    return Path(env) if env else Path.home() / ".local" / "share" / "toporeg" / "context_sets"


def file_stem(name: str) -> str:
    """A set name as a portable file name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    if not stem:
        raise nodes.input_error("give the context set a name")
    return stem


# --- checks ----------------------------------------------------------------------------------------
def check_image(node, role: str) -> None:
    """`node` can be read as one intensity image (target or context image)."""
    if node is None or not node.IsA(nodes.SCALAR_CLASS) or nodes.is_labelmap(node):
        raise nodes.input_error(f"the {role} must be a scalar volume")
    if node.GetImageData() is None:
        raise nodes.input_error(f"{role} '{node.GetName()}' has no image data")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise nodes.input_error(f"{role} '{node.GetName()}' must have a single component")


def check_pair(scene, image, output, task: str = "segment", label_value: int | None = None, where: str = "") -> None:
    """Raise `InputError` when (image, output) cannot be a context pair of `task`; the panel's "Add pair" too."""
    where = where or "context pair"
    if image is None or output is None:
        raise nodes.input_error(f"{where}: select an image and its label map, segmentation or output volume")
    for node in (image, output):
        if not scene.IsNodePresent(node):
            raise nodes.input_error(f"{where}: '{node.GetName()}' was removed from the scene")
    check_image(image, f"image of the {where}")
    if output is image:
        raise nodes.input_error(f"{where}: the output must be another node than the image")
    is_seg = output.IsA(SEGMENTATION_CLASS)
    if task == "image" and (is_seg or not output.IsA(nodes.SCALAR_CLASS)):
        raise nodes.input_error(f"{where}: task 'image' needs an output volume, not '{output.GetName()}'")
    if not is_seg and not output.IsA(nodes.SCALAR_CLASS):
        raise nodes.input_error(f"{where}: '{output.GetName()}' must be a label map, segmentation or volume")
    if not is_seg and output.GetImageData() is None:
        raise nodes.input_error(f"{where}: output '{output.GetName()}' has no image data")
    if task != "segment":
        return
    values = np.asarray(output_volume(image, output, task).data)
    if label_value is not None and not (values == label_value).any():
        present = [int(v) for v in np.unique(values) if v != 0][:12]
        raise nodes.input_error(f"{where}: label value {label_value} is absent from '{output.GetName()}' "
                                f"(its labels: {', '.join(map(str, present)) or 'none'})")
    if not values.any():
        raise nodes.input_error(f"{where}: label map '{output.GetName()}' is empty")


# --- the scene -------------------------------------------------------------------------------------
def scene_set_nodes(scene) -> list:
    """The context-set nodes of the scene, in scene order."""
    return [node for node in scene_nodes(scene, "vtkMRMLScriptedModuleNode") if node.GetAttribute(SET_ATTRIBUTE) == "1"]


def find_scene_set(scene, name: str):
    return next((node for node in scene_set_nodes(scene) if node.GetName() == name), None)


def write_scene_set(scene, selection: ContextSelection):
    """Store `selection` as the scene's set of that name (replacing its earlier content); returns the node."""
    node = find_scene_set(scene, selection.name)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", selection.name)
        node.SetAttribute(SET_ATTRIBUTE, "1")
        node.SetHideFromEditors(True)
    was = node.StartModify()
    try:
        for role in [node.GetNthNodeReferenceRole(i) for i in range(node.GetNumberOfNodeReferenceRoles())]:
            if role.startswith((IMAGE_ROLE, OUTPUT_ROLE)):
                node.RemoveNodeReferenceIDs(role)
        for index, (image, output) in enumerate(selection.pairs):
            node.SetNodeReferenceID(f"{IMAGE_ROLE}{index}", image.GetID())
            node.SetNodeReferenceID(f"{OUTPUT_ROLE}{index}", output.GetID())
        values = {"pairCount": len(selection.pairs), "task": selection.task, "plane": selection.plane,
                  "labelValue": selection.labelValue or "", "contextSize": selection.contextSize or ""}
        for key, value in values.items():
            node.SetParameter(key, str(value))
    finally:
        node.EndModify(was)
    return node


def read_scene_set(node) -> ContextSelection:
    """The set stored in `node`; pairs with a deleted node are left out (and counted in `dropped`)."""
    pairs, count = [], int(node.GetParameter("pairCount") or 0)
    for index in range(count):
        image, output = (node.GetNodeReference(f"{IMAGE_ROLE}{index}"), node.GetNodeReference(f"{OUTPUT_ROLE}{index}"))
        if image is not None and output is not None:
            pairs.append((image, output))
    number = lambda key: int(node.GetParameter(key)) if node.GetParameter(key) else None  # noqa: E731
    return ContextSelection(node.GetName(), pairs, node.GetParameter("task") or "segment", number("labelValue"),
                            node.GetParameter("plane") or "axial", number("contextSize"), count - len(pairs))


# --- nodes <-> files ---------------------------------------------------------------------------------
def node_file(node) -> Path | None:
    """The file `node` was read from when it still holds exactly that file's voxels and toporeg can read it."""
    storage = node.GetStorageNode() if node.IsA("vtkMRMLVolumeNode") else None
    name = storage.GetFileName() if storage is not None else None
    if not name or node.GetModifiedSinceRead() or not Path(name).is_file():
        return None
    return Path(name) if name.lower().endswith(FILE_SUFFIXES) else None


def segmentation_labels(node, reference):
    """A segmentation as a label map `Volume` on `reference`'s grid: each segment painted with its label value."""
    scene, segmentation = node.GetScene(), node.GetSegmentation()
    labels = None
    for index in range(segmentation.GetNumberOfSegments()):
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetNthSegmentID(index))
        labelmap = scene.AddNewNodeByClass(nodes.LABELMAP_CLASS, "__toporeg_context_export")
        export = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode
        try:
            if not export(node, ids, labelmap, reference):
                raise nodes.input_error(f"cannot export segmentation '{node.GetName()}' onto '{reference.GetName()}'")
            mask = nodes.volume_from_node(labelmap, is_label=True)
        finally:
            scene.RemoveNode(labelmap)
        if labels is None:
            labels = mask.with_data(np.zeros(mask.data.shape, np.uint16), is_label=True)
        labels.data[mask.data > 0] = segmentation.GetNthSegment(index).GetLabelValue()
    if labels is None:
        raise nodes.input_error(f"segmentation '{node.GetName()}' has no segments")
    return labels


def on_image_grid(image, output) -> bool:
    """The output volume samples the same points as its image (what `toporeg neuralize` requires of a pair)."""
    return (image.GetImageData().GetDimensions() == output.GetImageData().GetDimensions()
            and np.allclose(nodes.ijk_to_ras(image), nodes.ijk_to_ras(output), atol=1e-4))


def output_volume(image, output, task: str):
    """The output of a context pair as a `Volume` on its image's grid: segmentations exported there, volumes on
    another grid resampled (label maps nearest, images linear), as Slicer users often keep labels at another size."""
    if output.IsA(SEGMENTATION_CLASS):
        return segmentation_labels(output, image)
    volume = nodes.volume_from_node(output, is_label=task == "segment")
    if on_image_grid(image, output):
        return volume
    from toporeg.geometry import resample_to

    return resample_to(volume, nodes.volume_from_node(image, is_label=False))


def pair_files(pairs, folder: Path, task: str, names: dict[str, str] | None = None) -> list[tuple[Path, Path]]:
    """Files for every pair: a node's own file when it is unchanged, else a NIfTI written into `folder`.
    `names` (file -> what the user calls it) is filled in for error messages."""
    from toporeg.io import save_volume

    files = []
    for index, (image, output) in enumerate(pairs):
        written = []
        for role, node in (("image", image), ("output", output)):
            usable = role == "image" or (not node.IsA(SEGMENTATION_CLASS) and on_image_grid(image, node))
            path = node_file(node) if usable else None
            if path is None:
                volume = (nodes.volume_from_node(node, is_label=False) if role == "image"
                          else output_volume(image, node, task))
                path = save_volume(volume, Path(folder) / f"context_{index}_{role}.nii.gz")
            if names is not None:
                names[str(path)] = f"context {role} '{node.GetName()}'"
            written.append(Path(path))
        files.append((written[0], written[1]))
    return files


# --- JSON --------------------------------------------------------------------------------------------
def export_json(selection: ContextSelection, path: str | Path) -> Path:
    """Write `selection` as a library context-set JSON; nodes not on disk go to `<stem>_files/` beside it."""
    from toporeg.neuralizer.context_sets import ContextSet

    path = Path(path)
    if not selection.pairs:
        raise nodes.input_error("the context set is empty: add at least one pair")
    files = pair_files(selection.pairs, path.parent / f"{path.stem}_files", selection.task)
    ContextSet(name=selection.name or path.stem, pairs=[(str(i), str(o)) for i, o in files],
               task=selection.task, label_value=selection.labelValue if selection.task == "segment" else None,
               plane=selection.plane).save(path)
    return path


def import_json(scene, path: str | Path) -> ContextSelection:
    """Read a context-set JSON and load its files as nodes (a file already loaded and unchanged is reused)."""
    from toporeg.neuralizer.context_sets import ContextSet

    loaded = ContextSet.load(Path(path))
    label = loaded.task == "segment"
    pairs = [(_node_for_file(scene, image, False), _node_for_file(scene, output, label))
             for image, output in loaded.pairs]
    return ContextSelection(loaded.name, pairs, loaded.task, loaded.label_value, loaded.plane)


def _node_for_file(scene, path, label: bool):
    path = Path(path).resolve()
    for node in scene_nodes(scene, "vtkMRMLVolumeNode"):
        found = node_file(node)
        if found is not None and found.resolve() == path and nodes.is_labelmap(node) == label:
            return node
    return nodes.load_volume_node(scene, path, path.name.split(".")[0], label=label)
