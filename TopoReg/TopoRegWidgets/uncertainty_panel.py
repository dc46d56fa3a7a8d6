"""The Uncertainty section of the TopoReg panel: its widgets -> `UncertaintyParameters`, its buttons -> the
`UncertaintyLogic`. Lives outside TopoReg.py so the module file stays thin; like the other sections it only
forwards clicks and shows progress, status, legend and the full log of a failed run. The module widget's QTimer
polls `runner` together with the other sections' runners.
"""

from typing import Callable

import qt
from slicer.i18n import tr as _

from TopoRegLogic.topology_display import legend_text
from TopoRegLogic.uncertainty_logic import UncertaintyParameters
from TopoRegWidgets.background_panel import BackgroundPanel


class UncertaintyPanel(BackgroundPanel):
    """`logic`: an `UncertaintyLogic`; the rest as in `BackgroundPanel`."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool]):
        super().__init__(ui, logic, timer, ensure_dependencies, applyButton=ui.uncertaintyApplyButton,
                         cancelButton=ui.uncertaintyCancelButton, progressBar=ui.uncertaintyProgressBar,
                         statusLabel=ui.uncertaintyStatusLabel, logTextEdit=ui.uncertaintyLogTextEdit,
                         what="the segmentation")
        ui.uncertaintyLoadModelButton.connect("clicked(bool)", self.onLoadModel)
        ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.updateButtons()

    def updateButtons(self) -> None:
        super().updateButtons()
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
            self.showError(exc)

    def showResults(self, last: dict) -> None:
        self.ui.uncertaintySegmentationSelector.setCurrentNode(last["segmentation"])  # a new run updates it
        self.ui.uncertaintyLegendLabel.text = legend_text(last["legend"], "bits")
