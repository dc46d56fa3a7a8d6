"""Registration parameters: one set of names for the parameter node, the GUI, batch scripts and the CLI.

`TopoReg.py` declares the typed parameter node (`slicer.parameterNodeWrapper`) with exactly these field
names; the wrapper stores a `str`/`bool` field `x` as `parameterNode.GetParameter("x")`, a node field as
`parameterNode.GetNodeReference("x")` and a node-Union field under `x_<index>` (see UNION_FIELDS), so
`params_from_parameter_node` can read a saved scene's parameter node without the wrapper (batch scripts, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

METHODS = ("optimize", "learned", "dio", "carl")  # toporeg.methods.METHODS (tested)
DIO_TRANSFORMS = ("svf", "displacement", "affine")  # toporeg.dio.solver.SOLVER_TRANSFORMS (tested; no rigid)
PRESETS = ("fast", "default", "accurate")
TRANSFORM_MODELS = ("svf", "displacement", "affine", "rigid")
LINEAR_MODELS = ("affine", "rigid")
SIMILARITIES = ("lncc", "ncc", "mse", "nmi")  # toporeg.registration.available_similarities() (tested)
DEVICES = ("auto", "cpu", "cuda")

NODE_FIELDS = ("fixedVolume", "movingVolume", "fixedMask", "movingMask", "initialTransform",
               "outputTransform", "outputVolume", "fixedLandmarks", "movingLandmarks")
MASK_CLASSES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode")
# Optional[Union[labelmap, segmentation]]: the wrapper's UnionSerializer stores `<name>_<index>` (index of the
# matching class, len(MASK_CLASSES) for None)
UNION_FIELDS = {"fixedMask": MASK_CLASSES, "movingMask": MASK_CLASSES}
BOOL_FIELDS = ("applyToMoving", "showJacobian", "topologyAware")
# list[node] fields: Slicer's ListSerializer stores `<name>.len` and a reference `<name>.<i>` per item. No GUI connector
# exists for a checkable node combo box, so the widget syncs these itself (TopoRegWidgets/warp_along.py).
NODE_LIST_FIELDS = ("warpAlong",)
# Fields the widget syncs itself: node lists (above) and the editable model-name combo box, which lists the installed
# models but also takes a typed path (Slicer's connector binds a combo box to a fixed set of choices).
WIDGET_SYNCED_FIELDS = NODE_LIST_FIELDS + ("registrationModel",)

# The topology and uncertainty panels' settings live in the same parameter node (typed in TopoReg.py) so they survive
# scene save/reload; percentages are ints because Slicer's QSlider connector binds int fields only.
TOPOLOGY_METHODS = ("optimize", "learned")     # toporeg.cli.topology_cmd --method
TOPOLOGY_FEATURES = ("intensity", "semantic")  # --features (intensity first: the CLI default)
UNCERTAINTY_TASKS = ("tissue", "brain")        # the .ui's order; toporeg.cli.segment_cmd.TASKS
PANEL_DEFAULTS: dict[str, Any] = {
    "topologyMethod": "optimize", "topologyFeatures": "intensity", "heatmapVolume": None,
    "heatmapOpacity": 50, "heatmapThreshold": 25,
    "uncertaintyInput": None, "uncertaintyTask": "tissue", "uncertaintySamples": 16, "probabilityVolumes": False,
    "uncertaintySegmentation": None}
PANEL_NODE_FIELDS = ("heatmapVolume", "uncertaintyInput", "uncertaintySegmentation")
PANEL_INT_FIELDS = ("heatmapOpacity", "heatmapThreshold", "uncertaintySamples")
PANEL_BOOL_FIELDS = ("probabilityVolumes",)


@dataclass
class RegistrationParams:
    """What one registration needs; duck-type compatible with the module's parameter node wrapper.

    Node fields hold MRML nodes (or None). `settings` (a `toporeg.registration.RegistrationSettings`)
    overrides preset/transform/similarity for in-process runs (tests, batch scripts with custom budgets);
    background runs always use the CLI's presets. `warpAlong` lists moving-space nodes (segmentations,
    markups, models) to place under the output transform.
    """

    fixedVolume: Any = None
    movingVolume: Any = None
    method: str = "optimize"
    registrationModel: str = ""  # learned/dio/carl: installed model name or .safetensors path; "" = bundled default
    preset: str = "default"
    transformModel: str = "svf"
    similarity: str = "lncc"
    fixedMask: Any = None
    movingMask: Any = None
    initialTransform: Any = None
    device: str = "auto"
    outputTransform: Any = None
    outputVolume: Any = None
    fixedLandmarks: Any = None
    movingLandmarks: Any = None
    applyToMoving: bool = True
    showJacobian: bool = True
    topologyAware: bool = False  # `toporeg register --topology-aware` (background runs through the CLI only)
    settings: Any = None
    warpAlong: tuple = field(default_factory=tuple)


DEFAULTS = {f.name: f.default for f in fields(RegistrationParams) if f.name not in ("settings", "warpAlong")}


def get(params: Any, name: str) -> Any:
    """Field `name` of a `RegistrationParams`, a parameter node wrapper or any object with those attributes."""
    return getattr(params, name, DEFAULTS.get(name))


def as_params(params: Any) -> RegistrationParams:
    """A plain `RegistrationParams` copy of any compatible object (e.g. the typed parameter node)."""
    if isinstance(params, RegistrationParams):
        return params
    values = {f.name: getattr(params, f.name, None) for f in fields(RegistrationParams)}
    values = {k: v for k, v in values.items() if v is not None}
    values["warpAlong"] = tuple(n for n in values.get("warpAlong", ()) if n is not None)  # a snapshot of the list
    return RegistrationParams(**values)


def _read(node, name: str, default: Any) -> Any:
    """One field as the wrapper stores it (see the module docstring); `default` when it was never written."""
    if name in UNION_FIELDS:
        refs = (node.GetNodeReference(f"{name}_{i}") for i in range(len(UNION_FIELDS[name])))
        return next((r for r in refs if r is not None), None)
    if name in NODE_FIELDS or name in PANEL_NODE_FIELDS:
        return node.GetNodeReference(name)
    text = node.GetParameter(name)
    if not text:
        return default
    if name in BOOL_FIELDS or name in PANEL_BOOL_FIELDS:
        return text == "True"
    return int(text) if name in PANEL_INT_FIELDS else text


def _read_node_list(node, name: str) -> tuple:
    count = int(node.GetParameter(f"{name}.len") or 0)
    return tuple(r for r in (node.GetNodeReference(f"{name}.{i}") for i in range(count)) if r is not None)


def params_from_parameter_node(node) -> RegistrationParams:
    """Read a vtkMRMLScriptedModuleNode written by the module's parameter node wrapper."""
    return RegistrationParams(**{name: _read(node, name, default) for name, default in DEFAULTS.items()},
                              warpAlong=_read_node_list(node, "warpAlong"))


def panel_settings_from_parameter_node(node) -> dict[str, Any]:
    """The topology and uncertainty panels' settings of a saved parameter node (batch scripts, tests)."""
    return {name: _read(node, name, default) for name, default in PANEL_DEFAULTS.items()}


def write_parameter_node(node, params: Any) -> None:
    """Store `params` (and any panel settings it has) the way the parameter node wrapper does."""
    was = node.StartModify()
    try:
        for name, default in (*DEFAULTS.items(), *PANEL_DEFAULTS.items()):
            value = getattr(params, name, default)
            if name in UNION_FIELDS:
                classes = UNION_FIELDS[name]
                for i in range(len(classes) + 1):
                    node.UnsetParameter(f"{name}_{i}")
                    node.RemoveNodeReferenceIDs(f"{name}_{i}")
                index = len(classes) if value is None else next(i for i, c in enumerate(classes) if value.IsA(c))
                node.SetParameter(f"{name}_{index}", "True" if value is None else "")
                if value is not None:
                    node.SetNodeReferenceID(f"{name}_{index}", value.GetID())
            elif name in NODE_FIELDS or name in PANEL_NODE_FIELDS:
                node.SetParameter(name, "")
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            elif name in BOOL_FIELDS or name in PANEL_BOOL_FIELDS:
                node.SetParameter(name, "True" if value else "False")
            else:
                node.SetParameter(name, str(value))
        for name in NODE_LIST_FIELDS:
            _write_node_list(node, name, [n for n in getattr(params, name, ()) or () if n is not None])
    finally:
        node.EndModify(was)


def _write_node_list(node, name: str, items: list) -> None:
    for i in range(max(int(node.GetParameter(f"{name}.len") or 0), len(items))):
        node.UnsetParameter(f"{name}.{i}")
        node.RemoveNodeReferenceIDs(f"{name}.{i}")
        if i < len(items):
            node.SetParameter(f"{name}.{i}", "")
            node.SetNodeReferenceID(f"{name}.{i}", items[i].GetID())
    node.SetParameter(f"{name}.len", str(len(items)))
