"""Maps on the slice views: perceptual colour map, fixed window, legend attributes, foreground overlay.

Written for the topology heatmaps and shared by every overlay the module shows (the uncertainty panel's entropy map
uses the same colour map, window, legend attributes and composite-node helpers, with bits instead of nats).

The display map (`heatmap_display.nii.gz`, log(1 + max(L - median, 0)) / log(1 + 1000 nats)) always uses the window [0, 1],
so one colour means the same number of nats in every run of one image; report.json's `display_legend` says which
(display 0 / 0.25 / 0.5 / 0.75 / 1 -> nats per voxel). The legend is kept on the nodes as attributes
`TopoReg.legend.<display value>` = "<value> nats", so it survives scene save and reload.
"""

from __future__ import annotations

import math

import numpy as np
import slicer
import vtk

from . import nodes
from .nodes import scene_nodes

LEGEND_PREFIX = "TopoReg.legend."
COLOR_NAME = "TopoReg Inferno"
# matplotlib's perceptual "inferno" at 0, 1/8, ..., 1 (used when the scene has no "Inferno" colour table)
INFERNO = ((0.001, 0.000, 0.014), (0.079, 0.042, 0.206), (0.258, 0.039, 0.406), (0.416, 0.090, 0.433),
           (0.578, 0.148, 0.404), (0.736, 0.216, 0.330), (0.865, 0.317, 0.226), (0.955, 0.469, 0.100),
           (0.988, 0.998, 0.645))


def legend_text(legend: dict, unit: str = "nats") -> str:
    """One line for the panel: display values -> `unit` per voxel."""
    items = sorted(legend.items(), key=lambda kv: float(kv[0]))
    return ("Colour " + " / ".join(k for k, _ in items) + " = " + " / ".join(f"{v:.3g}" for _, v in items)
            + f" {unit} per voxel")


def set_legend(node, legend: dict, units: str, unit: str = "nats") -> None:
    """`units` describes the node's voxel values; `legend` (display value -> value in `unit`) becomes attributes."""
    node.SetAttribute("TopoReg.Units", units)
    for key, value in legend.items():
        node.SetAttribute(f"{LEGEND_PREFIX}{key}", f"{value:.3g} {unit}")


def legend_from_node(node) -> dict:
    """The legend attributes of a node, as display value (str) -> text."""
    return {name[len(LEGEND_PREFIX):]: node.GetAttribute(name) for name in node.GetAttributeNames() or ()
            if name.startswith(LEGEND_PREFIX)}


def color_node(scene):
    """Slicer's "Inferno" colour table when the scene has one (desktop Slicer), else a procedural copy."""
    for name in ("Inferno", COLOR_NAME):
        found = scene.GetFirstNodeByName(name)
        if found is not None and found.IsA("vtkMRMLColorNode"):
            return found
    node = scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", COLOR_NAME)
    node.SetAttribute("Category", "TopoReg")
    ctf = vtk.vtkColorTransferFunction()
    for index, rgb in enumerate(INFERNO):
        ctf.AddRGBPoint(index / (len(INFERNO) - 1), *rgb)
    node.SetAndObserveColorTransferFunction(ctf)
    return node


def style_map(scene, node, low: float, high: float, threshold: float = 0.0) -> None:
    """Colour map, fixed window [low, high]; values below `threshold` (> 0) are transparent in an overlay."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    set_threshold(node, threshold)


def set_threshold(node, threshold: float) -> None:
    """The panel's threshold slider: map values below `threshold` (> 0) are transparent in the overlay."""
    display = node.GetDisplayNode()
    display.SetApplyThreshold(1 if threshold > 0 else 0)
    if threshold > 0:
        display.SetThreshold(threshold, 1e6)


def display_to_value(legend: dict, display: float) -> float | None:
    """The heatmap value (nats) at a display-map value, from the legend: the display map is
    log(1 + max(L - m, 0)) / log(1 + R) with m = legend["0"] and m + R = legend["1"] (toporeg.topology.display_map)."""
    if "0" not in legend or "1" not in legend:
        return None
    low, high = float(legend["0"]), float(legend["1"])
    return low + math.expm1(display * math.log1p(high - low))


def add_color_legend(node, title: str, label_format: str = "%.2g"):
    """Slicer's colour legend (title with the units) for an overlay in the slice views, kept on the node's display
    node so the scene saves it; returns the vtkMRMLColorLegendDisplayNode (existing one reused)."""
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
    legend.SetTitleText(title)
    legend.SetLabelFormat(label_format)
    legend.SetVisibility(True)
    return legend


def threshold_segmentation(scene, node, threshold: float, reference, segmentation=None,
                           segment_name: str = "Above threshold", color=(1.0, 0.85, 0.1)):
    """"Show as segmentation": voxels of map `node` at or above `threshold` as one segment on `reference`'s grid
    (a new segmentation node unless one is given; a second call updates the same segment). Why a segmentation:
    the regions can then be measured, edited and exported with Slicer's segmentation tools."""
    volume = nodes.volume_from_node(node, is_label=False)
    mask = (np.asarray(volume.data) >= threshold).astype(np.uint8)
    if threshold <= 0 or not mask.any():
        raise nodes.input_error(f"no voxel of '{node.GetName()}' reaches the threshold {threshold:g}")
    if segmentation is None:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                               scene.GenerateUniqueName(f"{node.GetName()} thresholded"))
        segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    content = segmentation.GetSegmentation()
    segment_id = "topoReg_threshold"
    if content.GetSegment(segment_id) is None:
        content.AddEmptySegment(segment_id, segment_name)
    segment = content.GetSegment(segment_id)
    segment.SetName(segment_name)
    segment.SetColor(*color)
    labelmap = nodes.new_volume_node(scene, volume.with_data(mask, is_label=True), "__toporeg_threshold", label=True)
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
            raise nodes.input_error(f"cannot import the thresholded regions into '{segmentation.GetName()}'")
    finally:
        scene.RemoveNode(labelmap)
    segmentation.SetAttribute("TopoReg.Threshold", f"{threshold:g}")
    segmentation.SetNodeReferenceID("TopoReg.ThresholdSource", node.GetID())
    return segmentation


def show_overlay(scene, background, foreground, opacity: float) -> None:
    """Background = the examined volume, foreground = its map, in every slice view."""
    for composite in scene_nodes(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID())
        composite.SetForegroundOpacity(float(opacity))


def set_opacity(scene, opacity: float) -> None:
    """The panel's opacity slider: the foreground opacity of every slice view."""
    for composite in scene_nodes(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetForegroundOpacity(float(opacity))
