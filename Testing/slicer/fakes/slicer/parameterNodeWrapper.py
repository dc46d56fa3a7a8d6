"""FAKE `slicer.parameterNodeWrapper` for TopoReg's tests (the real package imports qt/ctk widgets).

It stores values exactly as Slicer's serializers do (Base/Python/slicer/parameterNodeWrapper/serializers.py):
str/Choice -> `SetParameter(name, value)`; bool -> "True"/"False"; int/float -> `str(value)`; a node ->
`SetParameter(name, "")` + `SetNodeReferenceID(name, id)`; a Union of nodes (UnionSerializer) -> the same under
`name_<index of the first matching type>`, and None (only allowed when NoneType is in the Union, as in
Slicer) -> `SetParameter(name_<index of NoneType>, "True")`. Missing parameters are written with their defaults
when the wrapper is created, as in the real `_initMethod`. So a scene saved with this fake has the same
parameter node as one saved by Slicer. Like Slicer's qMRMLNodeComboBox connector, `connectGui` sets the
combo box's `nodeTypes` from the annotation.

`connectGui(ui)` binds widgets carrying the dynamic property `SlicerParameterName` (node combo boxes via
`currentNodeChanged`, `QComboBox` via its `Choice` list which it loads into the combo, `QCheckBox`, int fields on
`QSlider` / `QSpinBox` with their `WithinRange` bounds), writes the
current values to them, and keeps both directions in sync like the real connectors. A `list[<node class>]` is
stored as Slicer's ListSerializer does (`name.len`, and one node reference `name.<i>` per item) and read back as a
plain list; like Slicer, no widget connects to it. Parameter packs, other lists, validators other than `Choice` and
GUI creation are not faked.
"""

from __future__ import annotations

import typing as _typing

import slicer as _slicer
import vtk as _vtk


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class Default:
    def __init__(self, value):
        self.value = value


def _split(annotated):
    if _typing.get_origin(annotated) is _typing.Annotated:
        args = _typing.get_args(annotated)
        return args[0], list(args[1:])
    return annotated, []


def _node_classes(type_):
    """(node classes, Union argument list or None)."""
    if isinstance(type_, type) and issubclass(type_, _slicer.vtkMRMLNode):
        return (type_,), None
    if _typing.get_origin(type_) is _typing.Union:
        union = list(_typing.get_args(type_))
        args = [a for a in union if a is not type(None)]
        if args and all(isinstance(a, type) and issubclass(a, _slicer.vtkMRMLNode) for a in args):
            return tuple(args), union
    return (), None


def _node_list_classes(type_):
    """The node classes of `list[<node class>]`, else ()."""
    if _typing.get_origin(type_) is list:
        return _node_classes(_typing.get_args(type_)[0])[0]
    return ()


class _Param:
    def __init__(self, name, annotated, default):
        self.name = name
        self.type, self.annotations = _split(annotated)
        self.nodes, self.union = _node_classes(self.type)
        self.list_nodes = _node_list_classes(self.type)
        self.choice = next((a for a in self.annotations if isinstance(a, Choice)), None)
        explicit = next((a for a in self.annotations if isinstance(a, Default)), None)
        fallback = [] if self.list_nodes else None if self.nodes else {str: "", bool: False, int: 0,
                                                                          float: 0.0}.get(self.type)
        self.default = default if default is not _MISSING else (explicit.value if explicit else fallback)

    def is_in(self, node):
        if self.list_nodes:
            return node.HasParameter(f"{self.name}.len")
        if self.union:
            return any(node.HasParameter(f"{self.name}_{i}") for i in range(len(self.union)))
        return node.HasParameter(self.name)

    def write(self, node, value):
        if self.list_nodes:
            old_len = int(node.GetParameter(f"{self.name}.len") or 0)
            for i, item in enumerate(value):
                if not isinstance(item, self.list_nodes):
                    raise TypeError(f"{self.name}: expected {self.list_nodes}, got {type(item).__name__}")
                node.SetParameter(f"{self.name}.{i}", "")
                node.SetNodeReferenceID(f"{self.name}.{i}", item.GetID())
            node.SetParameter(f"{self.name}.len", str(len(value)))
            for i in range(len(value), old_len):
                node.UnsetParameter(f"{self.name}.{i}")
                node.RemoveNodeReferenceIDs(f"{self.name}.{i}")
            return
        if self.union:
            index = next((i for i, t in enumerate(self.union) if isinstance(value, t)), None)
            if index is None:
                raise TypeError(f"Unable to write value '{value}' of type '{type(value)}'")
            for i in range(len(self.union)):
                node.UnsetParameter(f"{self.name}_{i}")
                node.RemoveNodeReferenceIDs(f"{self.name}_{i}")
            node.SetParameter(f"{self.name}_{index}", "True" if value is None else "")
            if value is not None:
                node.SetNodeReferenceID(f"{self.name}_{index}", value.GetID())
            return
        if self.nodes:
            if value is not None and not isinstance(value, self.nodes):
                raise TypeError(f"{self.name}: expected {self.nodes}, got {type(value).__name__}")
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            return
        if self.choice is not None and value not in self.choice.choices:
            raise ValueError(f"{self.name}: {value!r} not in {self.choice.choices}")
        text = ("True" if value else "False") if self.type is bool else str(value)
        node.SetParameter(self.name, text)

    def read(self, node):
        if self.list_nodes:
            return [node.GetNodeReference(f"{self.name}.{i}")
                    for i in range(int(node.GetParameter(f"{self.name}.len") or 0))]
        if self.union:
            index = next(i for i in range(len(self.union)) if node.HasParameter(f"{self.name}_{i}"))
            return None if self.union[index] is type(None) else node.GetNodeReference(f"{self.name}_{index}")
        if self.nodes:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.type is bool:
            return text == "True"
        return self.type(text) if self.type in (int, float) else text


_MISSING = object()


def parameterNodeWrapper(classtype=None):  # noqa: N802 - Slicer's name
    def wrap(cls):
        hints = _typing.get_type_hints(cls, include_extras=True)
        params = {name: _Param(name, hint, getattr(cls, name, _MISSING)) for name, hint in hints.items()}
        for name in params:
            setattr(cls, name, property(lambda self, n=name: self.getValue(n),
                                        lambda self, value, n=name: self.setValue(n, value)))
        cls.allParameters = params
        cls._is_parameter_node_wrapper = True
        cls.__init__ = _init
        for method in (getValue, setValue, connectGui, disconnectGui, StartModify, EndModify, AddObserver,
                       RemoveObserver, Modified, default):
            setattr(cls, method.__name__, method)
        cls._update_gui = _update_gui
        return cls

    return wrap if classtype is None else wrap(classtype)


def _init(self, parameterNode):
    self.parameterNode = parameterNode
    self._guis, self._next_tag, self._updating = {}, 0, False
    for param in self.allParameters.values():
        if not param.is_in(parameterNode):
            param.write(parameterNode, param.default)
    self._observer = parameterNode.AddObserver(_vtk.vtkCommand.ModifiedEvent, lambda *_: self._update_gui())


def getValue(self, name):  # noqa: N802
    return self.allParameters[name].read(self.parameterNode)


def setValue(self, name, value):  # noqa: N802
    self.allParameters[name].write(self.parameterNode, value)


def default(self, name):
    return Default(self.allParameters[name].default)


def StartModify(self):  # noqa: N802
    return self.parameterNode.StartModify()


def EndModify(self, was):  # noqa: N802
    return self.parameterNode.EndModify(was)


def AddObserver(self, event, callback, priority=0.0):  # noqa: N802
    return self.parameterNode.AddObserver(event, callback, priority)


def RemoveObserver(self, tag):  # noqa: N802
    self.parameterNode.RemoveObserver(tag)


def Modified(self):  # noqa: N802
    self.parameterNode.Modified()


class _Connector:
    def __init__(self, widget, param):
        self.widget, self.param = widget, param
        if param.nodes:
            widget.nodeTypes = [cls.__name__ for cls in param.nodes]
            self.signal, self.read = widget.currentNodeChanged, widget.currentNode
            self.write = widget.setCurrentNode
        elif param.choice is not None and hasattr(widget, "currentIndex"):
            widget.clear()
            for choice in param.choice.choices:
                widget.addItem(str(choice))
            self.signal = widget.currentIndexChanged
            self.read = lambda: param.choice.choices[widget.currentIndex]
            self.write = lambda value: setattr(widget, "currentIndex", param.choice.choices.index(value))
        elif param.type is bool and hasattr(widget, "checked"):
            self.signal, self.read = widget.toggled, lambda: widget.checked
            self.write = lambda value: setattr(widget, "checked", bool(value))
        elif param.type is int and hasattr(widget, "setRange"):  # QSlider / QSpinBox, bounds from WithinRange
            bounds = next((a for a in param.annotations if isinstance(a, WithinRange)), None)
            if bounds is not None:
                widget.setRange(bounds.minimum, bounds.maximum)
            elif widget.className() == "QSlider":
                raise RuntimeError(f"{param.name}: a QSlider needs a WithinRange annotation (as in Slicer)")
            self.signal, self.read = widget.valueChanged, lambda: widget.value
            self.write = lambda value: setattr(widget, "value", int(value))
        else:
            raise RuntimeError(f"fake parameterNodeWrapper cannot connect {param.name} to {widget.className()}")


def connectGui(self, gui):  # noqa: N802
    widgets = gui.findChildren() if hasattr(gui, "findChildren") else list(vars(gui).values())
    connectors = {}
    for widget in widgets:
        name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
        if name:
            if name not in self.allParameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            connectors[name] = _Connector(widget, self.allParameters[name])
    tag, self._next_tag = self._next_tag, self._next_tag + 1
    self._guis[tag] = connectors
    for name, connector in connectors.items():
        connector.write(self.getValue(name))

        def changed(*_args, n=name, c=connector):
            if not self._updating:
                self.setValue(n, c.read())

        connector.callback = changed
        connector.signal.connect(changed)
    return tag


def disconnectGui(self, tag):  # noqa: N802
    for connector in self._guis.pop(tag, {}).values():
        connector.signal.disconnect(connector.callback)


def _update_gui(self):
    if self._updating:
        return
    self._updating = True
    try:
        for connectors in self._guis.values():
            for name, connector in connectors.items():
                connector.write(self.getValue(name))
    finally:
        self._updating = False
