"""The Topology heatmap section of the TopoReg panel: its widgets (plus the Registration section's inputs, masks,
preset and device) -> `TopologyParameters`, its buttons -> the `TopologyLogic`. Moved out of TopoReg.py, unchanged in
behaviour, so the module file stays thin as sections are added; the module widget's QTimer polls `runner`.
"""

from typing import Callable

from TopoRegLogic.topology_display import legend_text
from TopoRegLogic.topology_logic import TopologyParameters
from TopoRegWidgets.background_panel import BackgroundPanel


class TopologyPanel(BackgroundPanel):
    """`logic`: a `TopologyLogic`; the rest as in `BackgroundPanel` (Apply is "Compute heatmap")."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool]):
        super().__init__(ui, logic, timer, ensure_dependencies, applyButton=ui.computeHeatmapButton,
                         cancelButton=ui.topologyCancelButton, progressBar=ui.topologyProgressBar,
                         statusLabel=ui.topologyStatusLabel, logTextEdit=ui.topologyLogTextEdit,
                         what="the heatmap computation")
        ui.heatmapOpacitySlider.connect("valueChanged(int)", self.onOpacityChanged)
        ui.heatmapThresholdSlider.connect("valueChanged(int)", self.onThresholdChanged)
        ui.heatmapSegmentationButton.connect("clicked(bool)", self.onShowAsSegmentation)
        ui.topologyControlsSelector.setMRMLScene(logic.scene)
        ui.topologyModelComboBox.addItems(logic.available_models())
        self.updateButtons()

    def updateButtons(self) -> None:
        super().updateButtons()
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
            self.showError(exc)
            return
        ui.topologyStatusLabel.text = status

    def showResults(self, last: dict) -> None:
        self.ui.heatmapVolumeSelector.setCurrentNode(last["heatmap"])  # a new run updates the same nodes
        self.ui.heatmapLegendLabel.text = legend_text(last["legend"])
