"""FAKE `qt`, part 1: signals, QObject, QLayout and QWidget, the base every fake widget in qt.py builds on.

Not Qt (see qt.py's docstring); split out so that each file of the fake stays small.
"""

from __future__ import annotations

import inspect


class Signal:
    def __init__(self):
        self._slots = []

    def connect(self, slot):
        self._slots.append(slot)

    def disconnect(self, slot=None):
        self._slots = [] if slot is None else [s for s in self._slots if s != slot]

    def emit(self, *args):
        for slot in list(self._slots):
            slot(*args[:_arity(slot, len(args))])


def _arity(slot, available: int) -> int:
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


class QObject:
    SIGNALS: tuple[str, ...] = ()

    def __init__(self, parent=None):
        self._children, self._properties, self._class_name = [], {}, type(self).__name__
        self.name = ""
        for cls in type(self).__mro__:
            for signal in getattr(cls, "SIGNALS", ()):
                if signal not in self.__dict__:
                    setattr(self, signal, Signal())
        if parent is not None:
            parent._children.append(self)

    def connect(self, signature: str, slot):
        getattr(self, signature.split("(")[0]).connect(slot)

    def disconnect(self, signature: str, slot=None):
        getattr(self, signature.split("(")[0]).disconnect(slot)

    def children(self):
        return list(self._children)

    def findChildren(self, _cls=None):
        found = []
        for child in self._children:
            found += [child, *child.findChildren(_cls)]
        return found

    def objectName(self):
        return self.name

    def setObjectName(self, name):
        self.name = name

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value
        if not name[:1].isupper():  # Qt properties are attributes in PythonQt; dynamic ones are not
            setattr(self, name, value)

    def className(self):
        return self._class_name

    def isWidgetType(self):
        return True


class QLayout(QObject):
    def __init__(self, parent=None):
        super().__init__(None)
        self.items = []
        if parent is not None:
            parent.setLayout(self)

    def addWidget(self, widget, *args):
        self.items.append(widget)

    def addStretch(self, *args):
        pass


QVBoxLayout = QHBoxLayout = QFormLayout = QGridLayout = QLayout


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.enabled, self.visible, self.toolTip, self._layout = True, True, "", None

    def setLayout(self, layout):
        self._layout = layout

    def layout(self):
        return self._layout

    def setEnabled(self, value):
        self.enabled = bool(value)

    def isEnabled(self):
        return self.enabled

    def setVisible(self, value):
        self.visible = bool(value)

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setToolTip(self, text):
        self.toolTip = text
