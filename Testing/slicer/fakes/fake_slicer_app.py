"""FAKE `slicer.app` (qSlicerApplication) and module-parent object for TopoReg's tests.

Only what TopoReg touches: `temporaryPath` (a pytest tmp folder), `processEvents()` (no-op), a
`connect()` that records application signals such as "startupCompleted()" without firing them, and
`layoutManager()`, None as in Slicer without a main window (no views to fit).
"""

from __future__ import annotations

from types import SimpleNamespace


class FakeSlicerApplication:
    def __init__(self, temporary_path):
        self.temporaryPath = str(temporary_path)
        self.connections = []
        self.commandOptions = lambda: SimpleNamespace(noMainWindow=True)

    def processEvents(self):
        pass

    def connect(self, signal, slot):
        self.connections.append((signal, slot))

    def layoutManager(self):  # noqa: N802 - Qt name
        return None


def module_parent(path):
    """What Slicer passes to a ScriptedLoadableModule: an object with `path` (the module file) and attributes."""
    return SimpleNamespace(path=str(path))
