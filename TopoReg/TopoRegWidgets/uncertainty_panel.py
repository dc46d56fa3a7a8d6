"""The Uncertainty section of the TopoReg panel: its widgets -> `UncertaintyParameters`, its buttons -> the
`UncertaintyLogic`. Lives outside TopoReg.py so the module file stays thin; like the other sections it only
forwards clicks and shows progress, status, legend and the full log of a failed run. The module widget's QTimer
polls `runner` together with the other sections' runners.
"""

import logging
from typing import Callable

import qt
from slicer.i18n import tr as _

from TopoRegLogic.background import one_line
from TopoRegLogic.topology_display import legend_text
from TopoRegLogic.uncertainty_logic import UncertaintyParameters


class UncertaintyPanel:
    """`ui`: the module's child widgets; `logic`: an `UncertaintyLogic`; `timer`: the module widget's poll timer;
    `ensure_dependencies()`: asks to install missing packages, False when the user declined."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool]):
        self.ui, self.logic, self.timer, self.ensure_dependencies = ui, logic, timer, ensure_dependencies
        self.runner = None
        ui.uncertaintyApplyButton.connect("clicked(bool)", self.onApply)
        ui.uncertaintyCancelButton.connect("clicked(bool)", self.onCancel)
        ui.uncertaintyLoadModelButton.connect("clicked(bool)", self.onLoadModel)
        ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.updateButtons()

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def updateButtons(self) -> None:
        self.ui.uncertaintyApplyButton.enabled = not self.running
        self.ui.uncertaintyCancelButton.enabled = self.running
        self.ui.nextSampleButton.enabled = not self.running and bool(self.logic.last.get("samples"))

    def parameters(self) -> UncertaintyParameters:
        """The section's widgets (the device is the Registration section's)."""
        ui = self.ui
        return UncertaintyParameters(
            inputVolume=ui.uncertaintyInputSelector.currentNode(),
            model=ui.uncertaintyModelComboBox.currentText.strip(), task=ui.uncertaintyTaskComboBox.currentText,
            samples=int(ui.uncertaintySamplesSpinBox.value),
            device=ui.deviceComboBox.currentText, probabilityVolumes=bool(ui.probabilityVolumesCheckBox.checked),
            segmentation=ui.uncertaintySegmentationSelector.currentNode())

    def onApply(self) -> None:
        ui = self.ui
        try:
            if not self.ensure_dependencies():
                ui.uncertaintyStatusLabel.text = _("Cancelled: the required Python packages are not installed.")
                return
            ui.uncertaintyLogTextEdit.visible = False
            self.runner = self.logic.start_background(self.parameters(), self.onProgress, self.onDone)
        except Exception as exc:  # bad input or missing dependency: one line in the panel, details in the log
            logging.exception("TopoReg: could not start the segmentation")
            ui.uncertaintyStatusLabel.text = _("Error: {message}").format(message=one_line(exc))
            return
        ui.uncertaintyProgressBar.value = 0
        ui.uncertaintyProgressBar.visible = True
        ui.uncertaintyStatusLabel.text = _("Running...")
        self.timer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.uncertaintyStatusLabel.text = _("Cancelling...")

    def onLoadModel(self) -> None:
        """"Load from file": a trained model's weights (its .json card next to them says task and labels)."""
        path = qt.QFileDialog.getOpenFileName(None, _("Load a segmentation model"), "",
                                              _("Model weights (*.safetensors)"))
        if path:
            self.ui.uncertaintyModelComboBox.addItem(path)
            self.ui.uncertaintyModelComboBox.setCurrentText(path)

    def onNextSample(self) -> None:
        try:
            self.ui.uncertaintyStatusLabel.text = self.logic.next_sample()
        except ValueError as exc:  # no run yet, or its nodes were deleted
            self.ui.uncertaintyStatusLabel.text = _("Error: {message}").format(message=one_line(exc))

    def onProgress(self, event) -> None:
        self.ui.uncertaintyProgressBar.value = int(round(100 * event.fraction))
        self.ui.uncertaintyStatusLabel.text = f"{event.stage}: {event.message}"

    def onDone(self, ok: bool, status: str) -> None:
        ui, last = self.ui, self.logic.last
        ui.uncertaintyProgressBar.value = 100 if ok else 0
        ui.uncertaintyProgressBar.visible = ok
        ui.uncertaintyStatusLabel.text = status
        if ok:
            ui.uncertaintySegmentationSelector.setCurrentNode(last["segmentation"])  # a new run updates it
            ui.uncertaintyLegendLabel.text = legend_text(last["legend"], "bits")
        else:
            ui.uncertaintyLogTextEdit.setPlainText(last.get("log", ""))
            ui.uncertaintyLogTextEdit.visible = True
        self.updateButtons()
