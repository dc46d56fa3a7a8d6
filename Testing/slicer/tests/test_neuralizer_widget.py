"""The Neuralizer panel's widget (FAKE qt/ctk/qMRML widgets, real .ui, real MRML) driving `NeuralizerLogic`: the
context list built from the scene, named context sets, and Apply running the real `toporeg neuralize` CLI with the
tiny random model of support/neuralizer_testing.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import qt
import slicer

from neuralizer_testing import TIMEOUT, scene
from toporeg_slicer_testing import record_progress, wait_for_background_run


@pytest.fixture
def widget(mini_slicer, tmp_path, monkeypatch):
    import TopoReg

    monkeypatch.setenv("TOPOREG_CONTEXT_SETS", str(tmp_path / "sets"))  # never the user's own folder
    s = scene(mini_slicer, tmp_path)
    parent = slicer.qMRMLWidget()
    parent.setLayout(qt.QVBoxLayout())
    module_widget = TopoReg.TopoRegWidget(parent)
    module_widget.setup()
    qt.QTimer.active.clear()
    yield SimpleNamespace(w=module_widget, ui=module_widget.ui, panel=module_widget.neuralizerPanel, s=s,
                          sets=tmp_path / "sets")
    module_widget.cleanup()
    qt.QTimer.active.clear()
    qt.QFileDialog.answer = ""


def _add(ui, image, output):
    ui.neuralizerContextImageSelector.setCurrentNode(image)
    ui.neuralizerContextOutputSelector.setCurrentNode(output)
    ui.neuralizerAddPairButton.click()


def _rows(ui):
    listed = ui.neuralizerContextList
    return [listed.item(i).text() for i in range(listed.count())]


def test_neuralizer_section_loads_enabled_with_its_widgets(widget):
    ui = widget.ui
    assert ui.neuralizerCollapsibleButton.enabled and ui.neuralizerCollapsibleButton.text == "Neuralizer"
    combos = {name: [getattr(ui, name).itemText(i) for i in range(getattr(ui, name).count())]
              for name in ("neuralizerTaskComboBox", "neuralizerPlaneComboBox", "neuralizerModelComboBox")}
    assert combos == {"neuralizerTaskComboBox": ["segment", "image"], "neuralizerModelComboBox": ["neuralizer_2d"],
                      "neuralizerPlaneComboBox": ["axial", "coronal", "sagittal"]}
    assert ui.neuralizerLabelValueSpinBox.value == 0 and ui.neuralizerContextSizeSpinBox.value == 0
    assert ui.neuralizerAlignCheckBox.checked and not ui.neuralizerProbabilityCheckBox.checked
    assert ui.neuralizerApplyButton.enabled and not ui.neuralizerCancelButton.enabled
    assert not ui.neuralizerProgressBar.visible and ui.neuralizerContextList.count() == 0
    for name in ("neuralizerTargetSelector", "neuralizerContextImageSelector", "neuralizerContextOutputSelector",
                 "neuralizerOutputSelector"):
        assert getattr(ui, name).mrmlScene() is slicer.mrmlScene, name         # via the .ui connections
    assert widget.w.logic.neuralizer.context_folder == widget.sets


def test_the_context_list_is_built_from_the_scene(widget):
    ui, s = widget.ui, widget.s
    ui.neuralizerAddPairButton.click()
    assert ui.neuralizerStatusLabel.text == "Error: context pair: select an image and its label map, segmentation " \
                                            "or output volume"
    _add(ui, s.images[0], s.labels[0])
    _add(ui, s.images[1], s.segmentation)
    _add(ui, s.images[1], s.outputs[1])
    assert _rows(ui) == ["1. context 0 \u2192 context 0 labels", "2. context 1 \u2192 context 1 labels segmentation",
                         "3. context 1 \u2192 context 1 inverted"]
    assert ui.neuralizerStatusLabel.text == "3 context pairs" and ui.neuralizerContextList.currentRow == 2
    ui.neuralizerMoveUpButton.click()
    assert _rows(ui)[1:] == ["2. context 1 \u2192 context 1 inverted",
                             "3. context 1 \u2192 context 1 labels segmentation"]
    assert ui.neuralizerContextList.currentRow == 1
    ui.neuralizerContextList.setCurrentRow(0)
    ui.neuralizerRemovePairButton.click()
    assert widget.panel.pairs == [(s.images[1], s.outputs[1]), (s.images[1], s.segmentation)]
    ui.neuralizerMoveDownButton.click()
    assert widget.panel.pairs == [(s.images[1], s.segmentation), (s.images[1], s.outputs[1])]
    ui.neuralizerLabelValueSpinBox.value = 7                                   # checked when the pair is added
    _add(ui, s.images[0], s.labels[0])
    assert ui.neuralizerStatusLabel.text == "Error: context pair: label value 7 is absent from 'context 0 labels' " \
                                            "(its labels: 1, 2)"
    slicer.mrmlScene.RemoveNode(s.outputs[1])                                  # pairs of deleted nodes disappear
    widget.panel.refreshList()
    assert _rows(ui) == ["1. context 1 \u2192 context 1 labels segmentation"]


def test_apply_with_bad_input_shows_one_line_error(widget):
    ui = widget.ui
    ui.neuralizerTargetSelector.setCurrentNode(widget.s.target)
    ui.neuralizerApplyButton.click()
    assert ui.neuralizerStatusLabel.text == "Error: add at least one context pair (an image and its label map, " \
                                            "segmentation or output volume)"
    assert widget.panel.runner is None and not qt.QTimer.active


def test_context_sets_are_saved_loaded_exported_and_imported(widget, tmp_path):
    ui, s, panel = widget.ui, widget.s, widget.panel
    _add(ui, s.images[0], s.labels[0])
    _add(ui, s.images[1], s.segmentation)
    ui.neuralizerLabelValueSpinBox.value = 2
    ui.neuralizerPlaneComboBox.setCurrentText("coronal")
    ui.neuralizerContextSetComboBox.setCurrentText("White matter")             # typed into the editable box
    ui.neuralizerSaveSetButton.click()
    assert ui.neuralizerStatusLabel.text == f"Saved context set 'White matter' (2 pairs) in the scene and in " \
                                            f"{widget.sets / 'White_matter.json'}"
    assert (widget.sets / "White_matter.json").is_file()
    assert ui.neuralizerContextSetComboBox.itemText(0) == "White matter"
    saved = list(panel.pairs)
    for _ in range(2):
        ui.neuralizerRemovePairButton.click()
    ui.neuralizerLabelValueSpinBox.value = 0
    ui.neuralizerPlaneComboBox.setCurrentText("axial")
    assert panel.pairs == [] and ui.neuralizerContextList.count() == 0
    ui.neuralizerLoadSetButton.click()
    assert ui.neuralizerStatusLabel.text == "Loaded context set 'White matter': 2 pairs"
    assert panel.pairs == saved and ui.neuralizerLabelValueSpinBox.value == 2
    assert ui.neuralizerPlaneComboBox.currentText == "coronal"

    qt.QFileDialog.answer = str(tmp_path / "share" / "wm.json")
    ui.neuralizerExportSetButton.click()
    assert ui.neuralizerStatusLabel.text == f"Exported the context set to {tmp_path / 'share' / 'wm.json'}"
    panel.pairs = []
    ui.neuralizerImportSetButton.click()                                        # reads what was exported
    assert ui.neuralizerStatusLabel.text == "Loaded context set 'White matter': 2 pairs"
    assert panel.pairs[0] == saved[0]                                           # unchanged file: the same node
    assert panel.pairs[1][1].IsA("vtkMRMLLabelMapVolumeNode")                   # the segmentation, as written
    qt.QFileDialog.answer = ""
    ui.neuralizerImportSetButton.click()                                        # the user cancels the dialog
    assert ui.neuralizerStatusLabel.text == "Loaded context set 'White matter': 2 pairs"
    ui.neuralizerContextSetComboBox.setCurrentText("unknown")
    ui.neuralizerLoadSetButton.click()
    assert ui.neuralizerStatusLabel.text.startswith("Error: no context set named 'unknown' in the scene or in ")


def test_apply_runs_the_cli_and_the_segmentation_appears(widget, tiny_neuralizer_model):
    ui, s = widget.ui, widget.s
    ui.neuralizerTargetSelector.setCurrentNode(s.target)
    _add(ui, s.images[0], s.labels[0])
    _add(ui, s.images[1], s.segmentation)
    qt.QFileDialog.answer = str(tiny_neuralizer_model)
    ui.neuralizerLoadModelButton.click()                                        # "load from file"
    assert ui.neuralizerModelComboBox.currentText == str(tiny_neuralizer_model)
    ui.neuralizerAlignCheckBox.checked = False
    ui.deviceComboBox.setCurrentText("cpu")
    before = set(slicer.util.getNodesByClass("vtkMRMLSegmentationNode"))
    fractions = record_progress(widget.w.neuralizerPanel)
    ui.neuralizerApplyButton.click()
    assert ui.neuralizerStatusLabel.text == "Running..." and ui.neuralizerCancelButton.enabled
    assert not ui.neuralizerApplyButton.enabled and ui.neuralizerProgressBar.visible
    values = wait_for_background_run(TIMEOUT, lambda: ui.neuralizerProgressBar.value)
    assert ui.neuralizerStatusLabel.text.startswith("Neuralizer done in "), \
        ui.neuralizerStatusLabel.text + ui.neuralizerLogTextEdit.toPlainText()
    assert ui.neuralizerProgressBar.value == 100 and values and len(set(fractions)) > 2
    assert fractions == sorted(fractions)                                      # progress only moves forward
    assert ui.neuralizerApplyButton.enabled and not ui.neuralizerCancelButton.enabled
    made = set(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) - before
    assert made == {widget.w.logic.neuralizer.last["output"]}
    seg = made.pop()
    assert seg.GetSegmentation().GetNumberOfSegments() == 1 and ui.neuralizerOutputSelector.currentNode() is None
    assert not list(Path(slicer.app.temporaryPath).glob("TopoRegNeuralizer-*"))
