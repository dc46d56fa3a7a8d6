"""The Uncertainty panel's widget (FAKE qt/ctk/qMRML widgets, real .ui, real MRML) driving `UncertaintyLogic` and the
real `toporeg segment` CLI with the tiny trained model of support/uncertainty_testing.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import qt
import slicer

from toporeg_slicer_testing import record_progress, wait_for_background_run
from uncertainty_testing import TIMEOUT, input_node


@pytest.fixture
def widget(mini_slicer):
    import TopoReg

    source = input_node(mini_slicer)
    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    module_widget = TopoReg.TopoRegWidget(parent)
    module_widget.setup()
    qt.QTimer.active.clear()
    yield SimpleNamespace(w=module_widget, ui=module_widget.ui, source=source)
    module_widget.cleanup()
    qt.QTimer.active.clear()
    qt.QFileDialog.answer = ""


def test_uncertainty_section_loads_enabled_with_its_widgets(widget):
    ui = widget.ui
    assert ui.uncertaintyCollapsibleButton.enabled and ui.uncertaintyCollapsibleButton.text == "Uncertainty"
    assert [ui.uncertaintyModelComboBox.itemText(i) for i in range(ui.uncertaintyModelComboBox.count())] == \
        ["unet", "ensemble", "mcdropout", "probunet"]
    assert ui.uncertaintyTaskComboBox.currentText == "tissue" and ui.uncertaintySamplesSpinBox.value == 16
    assert ui.uncertaintyApplyButton.enabled and not ui.uncertaintyCancelButton.enabled
    assert not ui.nextSampleButton.enabled and not ui.uncertaintyProgressBar.visible
    assert ui.uncertaintyInputSelector.mrmlScene() is slicer.mrmlScene                # via the .ui connection
    assert ui.uncertaintySegmentationSelector.mrmlScene() is slicer.mrmlScene
    ui.uncertaintyLoadModelButton.click()                                    # the user cancels the file dialog
    assert ui.uncertaintyModelComboBox.currentText == "unet"


def test_apply_with_bad_input_shows_one_line_error(widget):
    widget.ui.uncertaintyApplyButton.click()
    assert widget.ui.uncertaintyStatusLabel.text == "Error: select an input volume"
    assert widget.w.uncertaintyPanel.runner is None and not qt.QTimer.active


def test_apply_runs_the_cli_and_next_sample_cycles(widget, tiny_segmentation_model):
    ui = widget.ui
    ui.uncertaintyInputSelector.setCurrentNode(widget.source)
    qt.QFileDialog.answer = str(tiny_segmentation_model)
    ui.uncertaintyLoadModelButton.click()                                    # "load from file"
    assert ui.uncertaintyModelComboBox.currentText == str(tiny_segmentation_model)
    ui.uncertaintySamplesSpinBox.value = 2
    ui.deviceComboBox.setCurrentText("cpu")
    fractions = record_progress(widget.w.uncertaintyPanel)
    ui.uncertaintyApplyButton.click()
    assert ui.uncertaintyStatusLabel.text == "Running..." and ui.uncertaintyCancelButton.enabled
    assert not ui.uncertaintyApplyButton.enabled and not ui.nextSampleButton.enabled
    values = wait_for_background_run(TIMEOUT, lambda: ui.uncertaintyProgressBar.value)
    assert ui.uncertaintyStatusLabel.text.startswith("Segmentation done in "), \
        ui.uncertaintyStatusLabel.text + ui.uncertaintyLogTextEdit.toPlainText()
    assert ui.uncertaintyProgressBar.value == 100 and values and len(set(fractions)) > 2
    assert fractions == sorted(fractions)                                      # progress only moves forward
    assert ui.uncertaintyApplyButton.enabled and not ui.uncertaintyCancelButton.enabled and ui.nextSampleButton.enabled
    seg = ui.uncertaintySegmentationSelector.currentNode()
    assert seg is widget.w.logic.uncertainty.last["segmentation"] and seg.IsA("vtkMRMLSegmentationNode")
    assert ui.uncertaintyLegendLabel.text.endswith("= 0 / 0.5 / 1 / 1.5 / 2 bits per voxel")
    ui.nextSampleButton.click()
    assert ui.uncertaintyStatusLabel.text == "Showing sampled mask 1 of 2"
    for _ in range(2):
        ui.nextSampleButton.click()
    assert ui.uncertaintyStatusLabel.text == "Showing the mean segmentation"
    assert not list(Path(slicer.app.temporaryPath).glob("TopoRegUncertainty-*"))
