"""FAKE `qt.QFile` / `qt.QUiLoader` for TopoReg's tests (re-exported by the fake `qt`).

`QUiLoader().load(QFile(path))` parses the Qt Designer XML and builds fake widgets (see fakes/qt.py) with the
file's object names, properties (including dynamic ones such as `SlicerParameterName`), combo box items and its
signal/slot `<connections>` (e.g. `mrmlSceneChanged(vtkMRMLScene*)` -> `setMRMLScene(vtkMRMLScene*)`).
Unknown classes become plain fake `QWidget`s that remember their class name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import qt as _qt


class QFile:
    ReadOnly = 1

    def __init__(self, path):
        self.path = str(path)

    def exists(self):
        return Path(self.path).is_file()

    def open(self, _mode):
        return True

    def close(self):
        pass


class QUiLoader:
    """Builds fake widgets from a .ui file; unknown classes become plain `QWidget`s with the class name."""

    def load(self, qfile, parent=None):
        import ctk  # the fake ctk (ctkCollapsibleButton)
        from fake_slicer_widgets import WIDGET_CLASSES as slicer_classes

        classes = {**{n: c for n, c in vars(_qt).items() if isinstance(c, type) and issubclass(c, _qt.QObject)},
                   "ctkCollapsibleButton": ctk.ctkCollapsibleButton, **slicer_classes}
        root_xml = ET.parse(qfile.path).getroot()
        by_name = {}

        def build(element, parent_widget):
            cls_name = element.get("class")
            widget = classes.get(cls_name, _qt.QWidget)(parent_widget)
            widget._class_name, widget.name = cls_name, element.get("name", "")
            by_name[widget.name] = widget
            for prop in element.findall("property"):
                widget.setProperty(prop.get("name"), _value(prop))
            if isinstance(widget, _qt.QComboBox):
                for item in element.findall("item"):
                    widget.addItem(_value(item.find("property")))
            for child in element.iter():
                if child is not element and child.tag == "widget" and _nearest_widget(element, child):
                    build(child, widget)
            return widget

        root = build(root_xml.find("widget"), parent)
        for connection in root_xml.iter("connection"):
            sender, receiver = by_name.get(connection.findtext("sender")), by_name.get(connection.findtext("receiver"))
            if sender is not None and receiver is not None:
                slot = getattr(receiver, connection.findtext("slot").split("(")[0])
                sender.connect(connection.findtext("signal"), slot)
        return root


def _nearest_widget(ancestor, element) -> bool:
    """True when `ancestor` is the closest <widget> above `element` (layouts/items in between)."""
    def walk(node, path):
        for child in node:
            if child is element:
                return path
            found = walk(child, path + [child] if child.tag == "widget" else path)
            if found is not None:
                return found
        return None

    return walk(ancestor, []) == []


def _value(prop):
    child = next(iter(prop), None)
    if child is None:
        return None
    if child.tag == "bool":
        return child.text == "true"
    if child.tag in ("number", "enum"):
        try:
            return int(child.text)
        except (TypeError, ValueError):
            return child.text
    if child.tag == "double":
        return float(child.text)
    if child.tag == "stringlist":
        return [s.text or "" for s in child.findall("string")]
    return child.text or ""
