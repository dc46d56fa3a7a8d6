"""FAKE `ctk` for TopoReg's tests: only `ctkCollapsibleButton` (a fake button with `collapsed`)."""

from __future__ import annotations

import qt as _qt


class ctkCollapsibleButton(_qt.QAbstractButton):  # noqa: N801 - Qt class name
    SIGNALS = ("contentsCollapsed",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    @property
    def collapsed(self):
        return self._collapsed

    @collapsed.setter
    def collapsed(self, value):
        self._collapsed = bool(value)
        self.contentsCollapsed.emit(self._collapsed)
