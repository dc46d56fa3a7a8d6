"""The Topology heatmap section of the TopoReg panel: its widgets (plus the Registration section's inputs, masks,
preset and device) -> `TopologyParameters`, its buttons -> the `TopologyLogic`. Moved out of TopoReg.py, unchanged in
behaviour, so the module file stays thin as sections are added; the module widget's QTimer polls `runner`.
"""

import logging
from typing import Callable

from slicer.i18n import tr as _

from TopoRegLogic.background import one_line
from TopoRegLogic.topology_display import legend_text
from TopoRegLogic.topology_logic import TopologyParameters


class TopologyPanel:
    """`ui`: the module's child widgets; `logic`: a `TopologyLogic`; `timer`: the module widget's poll timer;
    `ensure_dependencies()`: asks to install missing packages, False when the user declined."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool]):
        self.ui, self.logic, self.timer, self.ensure_dependencies = ui, logic, timer, ensure_dependencies
        self.runner = None
        ui.computeHeatmapButton.connect("clicked(bool)", self.onCompute)
        ui.topologyCancelButton.connect("clicked(bool)", self.onCancel)
        ui.heatmapOpacitySlider.connect("valueChanged(int)", self.onOpacityChanged)
        ui.heatmapThresholdSlider.connect("valueChanged(int)", self.onThresholdChanged)
        ui.heatmapSegmentationButton.connect("clicked(bool)", self.onShowAsSegmentation)
        ui.topologyControlsSelector.setMRMLScene(logic.scene)
        ui.topologyModelComboBox.addItems(logic.available_models())
        self.updateButtons()

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def updateButtons(self) -> None:
        self.ui.computeHeatmapButton.enabled = not self.running
        self.ui.topologyCancelButton.enabled = self.running
        self.ui.heatmapSegmentationButton.enabled = not self.running

    def parameters(self) -> TopologyParameters:
        """The topology section's widgets; inputs, masks, preset and device are those of the registration section."""
        ui = self.ui
        return TopologyParameters(
            fixedVolume=ui.fixedVolumeSelector.currentNode(), movingVolume=ui.movingVolumeSelector.currentNode(),
            fixedMask=ui.fixedMaskSelector.currentNode(), movingMask=ui.movingMaskSelector.currentNode(),
            method=ui.topologyMethodComboBox.currentText, features=ui.topologyFeaturesComboBox.currentText,
            model=ui.topologyModelComboBox.currentText.strip(), preset=ui.presetComboBox.currentText,
            controls=tuple(ui.topologyControlsSelector.checkedNodes()), device=ui.deviceComboBox.currentText,
            heatmapVolume=ui.heatmapVolumeSelector.currentNode(), opacity=ui.heatmapOpacitySlider.value / 100.0,
            threshold=ui.heatmapThresholdSlider.value / 100.0)

    def onCompute(self) -> None:
        ui = self.ui
        try:
            if not self.ensure_dependencies():
                ui.topologyStatusLabel.text = _("Cancelled: the required Python packages are not installed.")
                return
            ui.topologyLogTextEdit.visible = False
            self.runner = self.logic.start_background(self.parameters(), self.onProgress, self.onDone)
        except Exception as exc:  # bad input or missing dependency: one line in the panel, details in the log
            logging.exception("TopoReg: could not start the heatmap computation")
            ui.topologyStatusLabel.text = _("Error: {message}").format(message=one_line(exc))
            return
        ui.topologyProgressBar.value = 0
        ui.topologyProgressBar.visible = True
        ui.topologyStatusLabel.text = _("Running...")
        self.timer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.topologyStatusLabel.text = _("Cancelling...")

    def onOpacityChanged(self, value: int) -> None:
        self.logic.set_opacity(value / 100.0)

    def onThresholdChanged(self, value: int) -> None:
        self.logic.set_threshold(value / 100.0, self.ui.heatmapVolumeSelector.currentNode())

    def onShowAsSegmentation(self) -> None:
        ui = self.ui
        try:
            _node, status = self.logic.show_as_segmentation(ui.heatmapThresholdSlider.value / 100.0,
                                                            ui.heatmapVolumeSelector.currentNode())
        except ValueError as exc:  # no heatmap yet, or nothing above the threshold
            status = _("Error: {message}").format(message=one_line(exc))
        ui.topologyStatusLabel.text = status

    def onProgress(self, event) -> None:
        self.ui.topologyProgressBar.value = int(round(100 * event.fraction))
        self.ui.topologyStatusLabel.text = f"{event.stage}: {event.message}"

    def onDone(self, ok: bool, status: str) -> None:
        ui, last = self.ui, self.logic.last
        ui.topologyProgressBar.value = 100 if ok else 0
        ui.topologyProgressBar.visible = ok
        ui.topologyStatusLabel.text = status
        if ok:
            ui.heatmapVolumeSelector.setCurrentNode(last["heatmap"])  # a new run updates the same nodes
            ui.heatmapLegendLabel.text = legend_text(last["legend"])
        else:
            ui.topologyLogTextEdit.setPlainText(last.get("log", ""))
            ui.topologyLogTextEdit.visible = True
        self.updateButtons()
