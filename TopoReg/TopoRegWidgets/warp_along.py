"""The Registration section's "Warp along" selector: segmentations, markups and models of the moving image that are
placed under the output transform after Apply (`RegistrationParams.warpAlong`; Slicer shows them through the
transform's inverse, so they follow the moving volume onto the fixed image).

Why by hand: the parameter node stores the list (`warpAlong`, a `list[vtkMRMLTransformableNode]` field), but Slicer's
parameterNodeWrapper has no GUI connector for a `qMRMLCheckableNodeComboBox`; this binds both directions.
"""

from __future__ import annotations

import qt
import vtk


class WarpAlongSelector:
    """Keeps `selector`'s checked nodes and the parameter node's `warpAlong` list equal."""

    def __init__(self, selector):
        self.selector, self.params, self._observer, self._updating = selector, None, None, False
        selector.connect("checkedNodesChanged()", self.onCheckedNodesChanged)

    def setParameterNode(self, params) -> None:
        """Follow `params` (the typed wrapper) or nothing (None); the GUI shows its list at once."""
        if self.params is not None and self._observer is not None:
            self.params.parameterNode.RemoveObserver(self._observer)
        self.params, self._observer = params, None
        if params is not None:
            self._observer = params.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    def onCheckedNodesChanged(self) -> None:
        if self.params is not None and not self._updating:
            self.params.warpAlong = list(self.selector.checkedNodes())

    def updateGui(self, *_args) -> None:
        """Check exactly the parameter node's nodes (a scene reload or a script may have changed the list)."""
        if self.params is None or self._updating:
            return
        wanted = [n for n in self.params.warpAlong if n is not None]
        ids = {n.GetID() for n in wanted}
        self._updating = True
        try:
            for node in self.selector.checkedNodes():
                if node.GetID() not in ids:
                    self.selector.setCheckState(node, qt.Qt.Unchecked)
            for node in wanted:
                self.selector.setCheckState(node, qt.Qt.Checked)
        finally:
            self._updating = False
