"""FAKE `qt` (PythonQt) for TopoReg's tests. Not Qt: a few plain-Python widgets, signals and a .ui loader.

Desktop Slicer's `qt` module does not exist in the slicer-core wheel. This fake provides only what
`TopoReg.py`, `slicer.util.loadUI` / `childWidgetVariables` and the fake parameter-node wrapper touch:

- `Signal` with `connect` / `disconnect` / `emit` (in fake_qt_core.py, with QObject / QLayout / QWidget), and
  PythonQt's `obj.connect("clicked(bool)", slot)`;
  like PythonQt, a slot taking fewer arguments than the signal sends is called with the first ones.
- `QUiLoader().load(QFile(path))` (in fake_qt_uiloader.py) builds these widgets from a Qt Designer file.
- `QTimer` never fires by itself: tests call `QTimer.fire_all()` (or `timer.timeout.emit()`).
- `QMessageBox.question` / `QFileDialog.getOpenFileName` / `getSaveFileName` return what a test put in `answer`.
Nothing is drawn; no event loop exists.
"""

from __future__ import annotations

from fake_qt_core import (QFormLayout, QGridLayout, QHBoxLayout, QLayout, QObject, QVBoxLayout,  # noqa: F401
                          QWidget, Signal)  # the fake qt module re-exports its base classes


class QLabel(QWidget):
    def __init__(self, text="", parent=None):
        if isinstance(text, QObject):  # QLabel(parent)
            text, parent = "", text
        super().__init__(parent)
        self.text, self.wordWrap = text, False

    def setText(self, text):
        self.text = text


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text, self.checkable, self._checked = "", False, False

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        if bool(value) != self._checked:
            self._checked = bool(value)
            self.toggled.emit(self._checked)
            if hasattr(self, "stateChanged"):
                self.stateChanged.emit(2 if self._checked else 0)

    def setChecked(self, value):
        self.checked = value

    def isChecked(self):
        return self._checked

    def setText(self, text):
        self.text = text

    def click(self):
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self._checked
        self.clicked.emit(self._checked)


class QPushButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.checkable = True


class _Item:
    def __init__(self, text):
        self.text, self.enabled = text, True

    def setEnabled(self, value):
        self.enabled = bool(value)

    def isEnabled(self):
        return self.enabled


class _ItemModel:
    def __init__(self, combo):
        self._combo = combo

    def item(self, row):
        return self._combo._items[row]

    def rowCount(self):
        return len(self._combo._items)


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items, self._index, self._typed = [], -1, None

    def addItem(self, text, *args):
        self._items.append(_Item(str(text)))
        if self._index < 0:
            self.currentIndex = 0

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        self._items, self._index, self._typed = [], -1, None

    def count(self):
        return len(self._items)

    def itemText(self, index):
        return self._items[index].text

    def findText(self, text):
        return next((i for i, item in enumerate(self._items) if item.text == text), -1)

    def model(self):
        return _ItemModel(self)

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        self._typed = None
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    @property
    def currentText(self):
        if self._typed is not None:
            return self._typed
        return self._items[self._index].text if 0 <= self._index < len(self._items) else ""

    def setCurrentText(self, text):
        """An editable combo box shows text that is not one of its items (what a user types), as Qt's does."""
        index = self.findText(text)
        if index < 0 and self.property("editable"):
            self._typed = text
            self.currentTextChanged.emit(text)
            return
        self.currentIndex = index


class _ListItem:
    def __init__(self, text):
        self._text = str(text)

    def text(self):
        return self._text


class QListWidget(QWidget):
    """Rows of text; `currentRow` (-1: none) emits `currentRowChanged(int)` when it changes."""

    SIGNALS = ("currentRowChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items, self._row = [], -1

    def addItem(self, text):
        self._items.append(_ListItem(text))

    def clear(self):
        self._items = []
        self.currentRow = -1

    def count(self):
        return len(self._items)

    def item(self, row):
        return self._items[row] if 0 <= row < len(self._items) else None

    @property
    def currentRow(self):
        return self._row

    @currentRow.setter
    def currentRow(self, row):
        row = row if 0 <= row < len(self._items) else -1
        if row != self._row:
            self._row = row
            self.currentRowChanged.emit(row)

    def setCurrentRow(self, row):
        self.currentRow = row


class QProgressBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.value, self.minimum, self.maximum, self.format = 0, 0, 100, "%p%"

    def setValue(self, value):
        self.value = int(value)


class QSlider(QWidget):
    """Integer slider: `value` (clamped to minimum..maximum) emits `valueChanged(int)` when it changes."""

    SIGNALS = ("valueChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self.orientation, self._value = 0, 99, None, 0

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        value = max(self.minimum, min(self.maximum, int(value)))
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def setValue(self, value):
        self.value = value

    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = int(minimum), int(maximum)
        self.value = self._value


class QSpinBox(QSlider):
    """Integer spin box: the same `value` / `valueChanged(int)` contract as the fake QSlider."""


class QPlainTextEdit(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.plainText, self.readOnly = "", False

    def setPlainText(self, text):
        self.plainText = text

    def appendPlainText(self, text):
        self.plainText = f"{self.plainText}\n{text}" if self.plainText else text

    def toPlainText(self):
        return self.plainText

    def clear(self):
        self.plainText = ""


class QTimer(QObject):
    SIGNALS = ("timeout",)
    active: list["QTimer"] = []

    def __init__(self, parent=None):
        super().__init__(parent)
        self.interval, self.singleShot_ = 0, False

    def setInterval(self, ms):
        self.interval = ms

    def start(self, ms=None):
        if ms is not None:
            self.interval = ms
        if self not in QTimer.active:
            QTimer.active.append(self)

    def stop(self):
        if self in QTimer.active:
            QTimer.active.remove(self)

    def isActive(self):
        return self in QTimer.active

    @staticmethod
    def singleShot(_ms, callback):
        callback()

    @staticmethod
    def fire_all():
        """Test helper: emit `timeout` of every started timer once; returns how many fired."""
        timers = list(QTimer.active)
        for timer in timers:
            timer.timeout.emit()
        return len(timers)


class Qt:
    Unchecked, PartiallyChecked, Checked = 0, 1, 2  # Qt::CheckState


class QMessageBox:
    Yes, No, Ok, Cancel = 0x4000, 0x10000, 0x400, 0x400000
    answer = Yes  # tests may change it

    @staticmethod
    def question(*_args, **_kwargs):
        return QMessageBox.answer


class QFileDialog:
    """`getOpenFileName` / `getSaveFileName` return `answer` (tests set it; "" = the user cancelled) and record
    the call."""

    answer = ""
    calls: list[tuple] = []

    @staticmethod
    def getOpenFileName(*args, **_kwargs):
        QFileDialog.calls.append(args)
        return QFileDialog.answer

    getSaveFileName = getOpenFileName


from fake_qt_uiloader import QFile, QUiLoader  # noqa: E402,F401 - the .ui loader lives in its own file
