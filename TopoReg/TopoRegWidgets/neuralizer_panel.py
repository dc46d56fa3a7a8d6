"""The Neuralizer section of the TopoReg panel: the context list the user builds from the scene (add, remove,
reorder), named context sets (scene + user folder, JSON import/export), task settings -> `NeuralizerParameters`,
and Apply/Cancel -> the `NeuralizerLogic`. Lives outside TopoReg.py so the module file stays thin; like the other
sections it only forwards clicks and shows progress, status and the full log of a failed run. The pairs are held
here (not in a widget) and the list widget only shows them; pairs whose nodes left the scene are dropped on refresh.
"""

import logging
from typing import Callable

import qt
from slicer.i18n import tr as _

from TopoRegLogic.neuralizer_logic import NeuralizerParameters
from TopoRegWidgets.background_panel import BackgroundPanel


class NeuralizerPanel(BackgroundPanel):
    """`logic`: a `NeuralizerLogic`; the rest as in `BackgroundPanel`. A succeeded run leaves the output selector as
    it was (no `showResults`): the next run makes a new node (results of several tasks side by side) unless the user
    picks one to update."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool]):
        super().__init__(ui, logic, timer, ensure_dependencies, applyButton=ui.neuralizerApplyButton,
                         cancelButton=ui.neuralizerCancelButton, progressBar=ui.neuralizerProgressBar,
                         statusLabel=ui.neuralizerStatusLabel, logTextEdit=ui.neuralizerLogTextEdit,
                         what="the Neuralizer")
        self.pairs: list = []
        for button, slot in ((ui.neuralizerAddPairButton, self.onAddPair),
                             (ui.neuralizerRemovePairButton, self.onRemovePair),
                             (ui.neuralizerMoveUpButton, lambda: self.onMove(-1)),
                             (ui.neuralizerMoveDownButton, lambda: self.onMove(1)),
                             (ui.neuralizerSaveSetButton, self.onSaveSet), (ui.neuralizerLoadSetButton, self.onLoadSet),
                             (ui.neuralizerImportSetButton, self.onImportSet),
                             (ui.neuralizerExportSetButton, self.onExportSet),
                             (ui.neuralizerLoadModelButton, self.onLoadModel)):
            button.connect("clicked(bool)", slot)
        self.refreshSetNames()
        self.updateButtons()

    # --- the context list ----------------------------------------------------------------------
    def refreshList(self, row: int | None = None) -> None:
        """Show the pairs (dropping those whose nodes were removed from the scene)."""
        scene = self.logic.scene
        self.pairs = [(i, o) for i, o in self.pairs if scene.IsNodePresent(i) and scene.IsNodePresent(o)]
        listed = self.ui.neuralizerContextList
        listed.clear()
        for index, (image, output) in enumerate(self.pairs, 1):
            listed.addItem(f"{index}. {image.GetName()} \u2192 {output.GetName()}")
        listed.setCurrentRow(len(self.pairs) - 1 if row is None else row)

    def onAddPair(self) -> None:
        ui = self.ui
        image = ui.neuralizerContextImageSelector.currentNode()
        output = ui.neuralizerContextOutputSelector.currentNode()
        try:
            self.logic.check_pair(image, output, ui.neuralizerTaskComboBox.currentText, self._labelValue())
        except ValueError as exc:  # InputError: one line in the panel
            self.showError(exc)
            return
        self.pairs.append((image, output))
        self.refreshList()
        ui.neuralizerStatusLabel.text = _("{count} context pairs").format(count=len(self.pairs))

    def onRemovePair(self) -> None:
        row = self.ui.neuralizerContextList.currentRow
        if 0 <= row < len(self.pairs):
            del self.pairs[row]
            self.refreshList(min(row, len(self.pairs) - 1))

    def onMove(self, step: int) -> None:
        row = self.ui.neuralizerContextList.currentRow
        if 0 <= row < len(self.pairs) and 0 <= row + step < len(self.pairs):
            self.pairs[row], self.pairs[row + step] = self.pairs[row + step], self.pairs[row]
            self.refreshList(row + step)

    # --- settings ------------------------------------------------------------------------------
    def _labelValue(self):
        return int(self.ui.neuralizerLabelValueSpinBox.value) or None

    def parameters(self) -> NeuralizerParameters:
        """The section's widgets (the device is the Registration section's)."""
        ui = self.ui
        return NeuralizerParameters(
            targetVolume=ui.neuralizerTargetSelector.currentNode(), contextPairs=tuple(self.pairs),
            task=ui.neuralizerTaskComboBox.currentText, labelValue=self._labelValue(),
            plane=ui.neuralizerPlaneComboBox.currentText,
            contextSize=int(ui.neuralizerContextSizeSpinBox.value) or None,
            model=ui.neuralizerModelComboBox.currentText.strip(), align=bool(ui.neuralizerAlignCheckBox.checked),
            device=ui.deviceComboBox.currentText, outputNode=ui.neuralizerOutputSelector.currentNode(),
            contextSetName=ui.neuralizerContextSetComboBox.currentText.strip(),
            probabilityVolume=bool(ui.neuralizerProbabilityCheckBox.checked))

    def showSelection(self, selection) -> None:
        """A loaded context set into the widgets: its pairs and the settings that define its task."""
        ui = self.ui
        self.pairs = list(selection.pairs)
        self.refreshList()
        ui.neuralizerTaskComboBox.setCurrentText(selection.task)
        ui.neuralizerPlaneComboBox.setCurrentText(selection.plane)
        ui.neuralizerLabelValueSpinBox.value = selection.labelValue or 0
        ui.neuralizerContextSizeSpinBox.value = selection.contextSize or 0
        self.refreshSetNames(selection.name)
        dropped = _(" ({count} pairs with deleted nodes left out)").format(count=selection.dropped) \
            if selection.dropped else ""
        ui.neuralizerStatusLabel.text = _("Loaded context set '{name}': {count} pairs").format(
            name=selection.name, count=len(self.pairs)) + dropped

    def refreshSetNames(self, current: str | None = None) -> None:
        combo = self.ui.neuralizerContextSetComboBox
        current = combo.currentText if current is None else current
        combo.clear()
        combo.addItems(self.logic.context_set_names())
        combo.setCurrentText(current)

    # --- context sets --------------------------------------------------------------------------
    def onSaveSet(self) -> None:
        name = self.ui.neuralizerContextSetComboBox.currentText.strip()
        try:
            path = self.logic.save_context_set(self.parameters(), name)
        except Exception as exc:  # bad name, empty set, a file that cannot be written
            logging.exception("TopoReg: could not save the context set")
            self.showError(exc)
            return
        self.refreshSetNames(name)
        self.ui.neuralizerStatusLabel.text = _("Saved context set '{name}' ({count} pairs) in the scene and in "
                                               "{path}").format(name=name, count=len(self.pairs), path=path)

    def onLoadSet(self) -> None:
        try:
            self.showSelection(self.logic.load_context_set(self.ui.neuralizerContextSetComboBox.currentText.strip()))
        except Exception as exc:  # unknown name, missing files
            logging.exception("TopoReg: could not load the context set")
            self.showError(exc)

    def onImportSet(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Import a context set"), str(self.logic.context_folder),
                                              _("Context sets (*.json)"))
        if path:
            try:
                self.showSelection(self.logic.import_context_set(path))
            except Exception as exc:  # not a context set, missing files
                logging.exception("TopoReg: could not import the context set")
                self.showError(exc)

    def onExportSet(self) -> None:
        path = qt.QFileDialog.getSaveFileName(None, _("Export the context set"), str(self.logic.context_folder),
                                              _("Context sets (*.json)"))
        if path:
            try:
                written = self.logic.export_context_set(self.parameters(), path)
            except Exception as exc:  # empty set, a file that cannot be written
                logging.exception("TopoReg: could not export the context set")
                self.showError(exc)
                return
            self.ui.neuralizerStatusLabel.text = _("Exported the context set to {path}").format(path=written)

    def onLoadModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Load a Neuralizer model"), "",
                                              _("Model weights (*.safetensors)"))
        if path:
            self.ui.neuralizerModelComboBox.addItem(path)
            self.ui.neuralizerModelComboBox.setCurrentText(path)

    # --- run (the rest is BackgroundPanel's) ---------------------------------------------------
    def beforeStart(self) -> None:
        """Drop the pairs whose nodes left the scene, so the run and the list agree."""
        self.refreshList()
