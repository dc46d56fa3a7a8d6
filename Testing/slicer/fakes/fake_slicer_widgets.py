"""FAKE qMRML widgets for TopoReg's tests (the real ones are C++ Qt widgets of desktop Slicer).

`qMRMLNodeComboBox` keeps a real `vtkMRMLScene` and a current node; `setCurrentNode` emits
`currentNodeChanged(vtkMRMLNode*)` like the real one. `nodeTypes` is checked against the node class so a
wrong .ui `nodeTypes` list fails the widget test. `qMRMLWidget.setMRMLScene` emits `mrmlSceneChanged`, which
the .ui file's connections forward to every selector.
"""

from __future__ import annotations

import qt as _qt


class qMRMLWidget(_qt.QWidget):  # noqa: N801 - Qt class name
    SIGNALS = ("mrmlSceneChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self.isEntered = False  # qSlicerAbstractModuleWidget property

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):  # noqa: N801 - Qt class name
    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged", "nodeAdded")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes, self.noneEnabled, self.addEnabled, self.removeEnabled = [], False, True, True
        self.renameEnabled, self.showChildNodeTypes, self.baseName = False, True, ""
        self._node = None

    def currentNode(self):
        return self._node

    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node):
        if node is not None and self.nodeTypes and not any(node.IsA(t) for t in self.nodeTypes):
            raise TypeError(f"{self.name}: node of class {node.GetClassName()} not in nodeTypes {self.nodeTypes}")
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(self.currentNodeID())

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if node_id else None)


WIDGET_CLASSES = {"qMRMLWidget": qMRMLWidget, "qMRMLNodeComboBox": qMRMLNodeComboBox,
                  "qSlicerWidget": qMRMLWidget}
