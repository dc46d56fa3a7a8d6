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


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):  # noqa: N801 - Qt class name
    """Picks several nodes: `checkedNodes()` lists the checked ones (scene order), `setCheckState(node, state)`
    with Qt's values (0 unchecked, 2 checked) emits `checkedNodesChanged()`."""

    SIGNALS = ("checkedNodesChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._checked = set()

    def nodes(self):
        if self._scene is None:
            return []
        found = (self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes()))
        return [n for n in found if any(n.IsA(t) for t in self.nodeTypes)
                and (self.showChildNodeTypes or n.GetClassName() in self.nodeTypes)]

    def setCheckState(self, node, state):
        if node not in self.nodes():
            raise TypeError(f"{self.name}: {node.GetName()} is not offered (nodeTypes {self.nodeTypes})")
        before = set(self._checked)
        (self._checked.add if state == 2 else self._checked.discard)(node.GetID())
        if self._checked != before:
            self.checkedNodesChanged.emit()

    def checkState(self, node):
        return 2 if node.GetID() in self._checked else 0

    def checkedNodes(self):
        return [n for n in self.nodes() if n.GetID() in self._checked]


WIDGET_CLASSES = {"qMRMLWidget": qMRMLWidget, "qMRMLNodeComboBox": qMRMLNodeComboBox,
                  "qMRMLCheckableNodeComboBox": qMRMLCheckableNodeComboBox, "qSlicerWidget": qMRMLWidget}
