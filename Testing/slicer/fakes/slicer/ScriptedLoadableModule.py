"""FAKE `slicer.ScriptedLoadableModule` for TopoReg's tests (desktop Slicer's file imports ctk/qt/PythonQt).

Reproduces only the contract TopoReg relies on, following Slicer's Base/Python/slicer/ScriptedLoadableModule.py:
- `ScriptedLoadableModule(parent)`: `moduleName`, sets parent.title/categories/... defaults, `resourcePath`.
- `ScriptedLoadableModuleWidget(parent=None)`: `moduleName`, `layout`, `resourcePath`, `setup` (called when
  there is no parent, as in Slicer), `cleanup`/`enter`/`exit` no-ops. The fake resolves resources next to the
  file defining the subclass (Slicer uses `slicer.util.modulePath(moduleName)`, the same folder once installed).
- `ScriptedLoadableModuleLogic`: the real Qt-free parameter-node code (`getParameterNode`, `createParameterNode`,
  `isSingletonParameterNode`) against the real `slicer.mrmlScene`.
- `ScriptedLoadableModuleTest`: a `unittest.TestCase` with `delayDisplay` printing instead of showing.
"""

from __future__ import annotations

import os as _os
import sys as _sys
import unittest as _unittest

import qt as _qt
import slicer as _slicer


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    def resourcePath(self, filename):
        return _os.path.join(_os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.moduleName = _strip(self.__class__.__name__, "Widget")
        self.developerMode = False
        if parent is None:
            self.parent = _slicer.qMRMLWidget()
            self.parent.setLayout(_qt.QVBoxLayout())
            self.parent.setMRMLScene(_slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if parent is None:
            self.setup()
            self.parent.show()

    def resourcePath(self, filename):
        module_file = _sys.modules[self.__class__.__module__].__file__
        return _os.path.join(_os.path.dirname(module_file), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def enter(self):
        pass

    def exit(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = _strip(self.__class__.__name__, "Logic")
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        if self.isSingletonParameterNode:
            node = _slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        node = self.createParameterNode()
        return _slicer.mrmlScene.AddNode(node)

    def getAllParameterNodes(self):
        nodes = _slicer.mrmlScene.GetNodesByClass("vtkMRMLScriptedModuleNode")
        return [n for n in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))
                if n.GetAttribute("ModuleName") == self.moduleName]

    def createParameterNode(self):
        node = _slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetName(_slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(_unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        print(message)

    def takeScreenshot(self, *args, **kwargs):
        pass
