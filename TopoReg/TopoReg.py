"""TopoReg: topology-aware deformable registration in 3D Slicer. Research use only, not for clinical decisions.

This file is deliberately thin: the GUI is `Resources/UI/TopoReg.ui`, its state a typed parameter node, and all
work happens in the Qt-free `TopoRegLogic` package (tested headless with slicer-core, Testing/slicer/).
"""

import logging
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLLinearTransformNode, vtkMRMLMarkupsFiducialNode,
                    vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTransformableNode, vtkMRMLTransformNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *  # noqa: F403 - Slicer's module base classes
from slicer.util import VTKObservationMixin

from TopoRegLogic import install, nodes, sample_data
from TopoRegLogic.background import one_line
from TopoRegLogic.neuralizer_logic import NeuralizerLogic, NeuralizerParameters
from TopoRegLogic.params import (DEVICES, METHODS, PRESETS, SIMILARITIES, TOPOLOGY_FEATURES,
                                 TOPOLOGY_METHODS, TRANSFORM_MODELS, UNCERTAINTY_TASKS, as_params)
from TopoRegLogic.registration_logic import RegistrationLogic
from TopoRegLogic.topology_logic import TopologyLogic, TopologyParameters
from TopoRegLogic.uncertainty_logic import UncertaintyLogic
from TopoRegWidgets.neuralizer_panel import NeuralizerPanel
from TopoRegWidgets.topology_panel import TopologyPanel
from TopoRegWidgets.uncertainty_panel import UncertaintyPanel
from TopoRegWidgets.warp_along import WarpAlongSelector


class TopoReg(ScriptedLoadableModule):  # noqa: F405
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)  # noqa: F405
        self.parent.title = _("TopoReg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["TopoReg developers"]
        self.parent.helpText = _(
            "Topology-aware deformable registration of a moving volume onto a fixed volume (training-free "
            "optimisation, a learned VoxelMorph-diff network, DIO learned features with a switchable solver, or CARL "
            "for large misalignment). Outputs: a transform node "
            "(fixed-to-moving displacement, the resampling direction), an optional warped volume on the fixed grid "
            "and a Jacobian-determinant overlay showing folding. The topology heatmap shows where no smooth "
            "deformation explains the fixed image (nats per voxel). The uncertainty panel segments brain or tissue "
            "with a voxel-wise uncertainty map (bits). The Neuralizer panel solves a new task (a label, skull "
            "stripping, denoising...) from context examples picked in the scene, without retraining. Research use "
            "only, not for clinical decisions.")
        self.parent.acknowledgementText = _(
            "Sample data: MNI ICBM152 2009a (nilearn) and Colin27 (mricron-data); see Resources/SampleData/LICENSE.md.")
        sample_data.register_on_startup(slicer.app, self.resourcePath("Icons/TopoReg.png"))  # Sample Data module


@parameterNodeWrapper
class TopoRegParameterNode:
    """The panels' state, saved with the scene; names and defaults are TopoRegLogic.params' (DEFAULTS, PANEL_DEFAULTS)."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    method: Annotated[str, Choice(list(METHODS))] = "optimize"
    registrationModel: str = ""  # learned/dio/carl: model name or .safetensors path; empty: the bundled default
    preset: Annotated[str, Choice(list(PRESETS))] = "default"
    transformModel: Annotated[str, Choice(list(TRANSFORM_MODELS))] = "svf"
    similarity: Annotated[str, Choice(list(SIMILARITIES))] = "lncc"
    # a node Union needs None in it for the wrapper; stored as fixedMask_0 (labelmap) / _1 (segmentation) / _2 (none)
    fixedMask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    movingMask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    initialTransform: vtkMRMLLinearTransformNode
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    outputTransform: vtkMRMLTransformNode
    outputVolume: vtkMRMLScalarVolumeNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    warpAlong: list[vtkMRMLTransformableNode]  # moving-space segmentations/markups/models; no connector: warp_along.py
    applyToMoving: bool = True
    showJacobian: bool = True
    topologyAware: bool = False
    topologyMethod: Annotated[str, Choice(list(TOPOLOGY_METHODS))] = "optimize"
    topologyFeatures: Annotated[str, Choice(list(TOPOLOGY_FEATURES))] = "intensity"
    heatmapVolume: vtkMRMLScalarVolumeNode
    heatmapOpacity: Annotated[int, WithinRange(0, 100)] = 50    # percent (Slicer's QSlider connector binds ints)
    heatmapThreshold: Annotated[int, WithinRange(0, 100)] = 25  # percent of the 0-1 display map
    uncertaintyInput: vtkMRMLScalarVolumeNode
    uncertaintyTask: Annotated[str, Choice(list(UNCERTAINTY_TASKS))] = "tissue"
    uncertaintySamples: Annotated[int, WithinRange(1, 64)] = 16
    probabilityVolumes: bool = False
    uncertaintySegmentation: vtkMRMLSegmentationNode


class TopoRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):  # noqa: F405
    """Loads the .ui, binds the parameter node, forwards clicks to the logic, shows progress and status."""

    def __init__(self, parent=None):
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = self.topologyPanel = self.uncertaintyPanel = self.neuralizerPanel = self.warpAlongSelector = None
        self._timer = None
        VTKObservationMixin.__init__(self)  # first: without a parent, the base class calls setup() right away
        ScriptedLoadableModuleWidget.__init__(self, parent)  # noqa: F405

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TopoReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or TopoRegLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        ensure = lambda: self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay)  # noqa: E731
        self.topologyPanel = TopologyPanel(self.ui, self.logic.topology, self._timer, ensure)
        self.uncertaintyPanel = UncertaintyPanel(self.ui, self.logic.uncertainty, self._timer, ensure)
        self.neuralizerPanel = NeuralizerPanel(self.ui, self.logic.neuralizer, self._timer, ensure)
        self.warpAlongSelector = WarpAlongSelector(self.ui.warpAlongSelector)
        self.ui.registrationModelComboBox.addItems([""] + self.logic.registration.available_models())
        self.initializeParameterNode()

    def _panels(self):  # the sections in TopoRegWidgets/ (each has its runner and updateButtons)
        return [p for p in (self.topologyPanel, self.uncertaintyPanel, self.neuralizerPanel) if p is not None]

    @property
    def _topologyRunner(self):
        return self.topologyPanel.runner if self.topologyPanel else None

    def _runners(self):
        return [r for r in (self._runner, *(p.runner for p in self._panels())) if r]

    def _stopRun(self):
        for runner in self._runners():
            if runner.running:
                runner.kill()
                runner.wait(timeout=10)  # finishes the run: temporary files removed, status "Cancelled"

    def cleanup(self):
        self._stopRun()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        self._stopRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        params = self._parameterNode
        if not params.fixedVolume and not params.movingVolume:  # save clicks: the first two volumes
            volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not nodes.is_labelmap(n)]
            if len(volumes) >= 2:
                params.fixedVolume, params.movingVolume = volumes[0], volumes[1]

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()
        self.warpAlongSelector.setParameterNode(self._parameterNode)

    def _checkCanApply(self, caller=None, event=None):
        running = self._runner is not None and self._runner.running
        problem = self.logic.inputProblem(self._parameterNode) if self._parameterNode else _("No parameter node")
        self.ui.applyButton.enabled = not problem and not running
        self.ui.applyButton.toolTip = problem or _("Register the moving volume onto the fixed volume")
        self.ui.cancelButton.enabled = running
        for panel in self._panels():
            panel.updateButtons()

    def _showStatus(self, text):
        self.ui.statusLabel.text = text

    def onApplyButton(self):
        try:
            if not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
                self._showStatus(_("Cancelled: the required Python packages are not installed."))
                return
            self.ui.logTextEdit.clear()
            self.ui.logTextEdit.visible = False
            self._parameterNode.registrationModel = self.ui.registrationModelComboBox.currentText.strip()
            self._runner = self.logic.startBackground(self._parameterNode, self._onProgress, self._onDone)
        except Exception as exc:  # bad input or missing dependency: one line in the panel, details in the log
            logging.exception("TopoReg: could not start the registration")
            self._showStatus(_("Error: {message}").format(message=one_line(exc)))
            return
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self._showStatus(_("Running..."))
        self._timer.start()
        self._checkCanApply()

    def onCancelButton(self):
        self.logic.cancel()
        self._showStatus(_("Cancelling..."))

    def _poll(self):
        if not any([runner.poll() for runner in self._runners()]):
            self._timer.stop()
            self._checkCanApply()

    def _onProgress(self, event):
        self.ui.progressBar.value = int(round(100 * event.fraction))
        self._showStatus(f"{event.stage}: {event.message}")

    def _onDone(self, ok, status):
        self.ui.progressBar.value = 100 if ok else 0
        self.ui.progressBar.visible = ok
        self._showStatus(status)
        if not ok:
            self.ui.logTextEdit.setPlainText(self.logic.registration.last.get("log", ""))
            self.ui.logTextEdit.visible = True


class TopoRegLogic(ScriptedLoadableModuleLogic):  # noqa: F405
    """Scriptable entry point; delegates to `TopoRegLogic.registration_logic.RegistrationLogic`.

    Batch use (no GUI): `logic = TopoRegLogic(); params = logic.getParameterNode(); params.fixedVolume = f; ...;
    status = logic.process(params)`. See TopoReg/Scripts/batch_register.py.
    """

    def __init__(self, launcher=None):
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        options = {"launcher": launcher} if launcher is not None else {}
        self.registration = RegistrationLogic(
            slicer.mrmlScene, volumes_logic=slicer.modules.volumes.logic(),
            segmentations_logic=slicer.modules.segmentations.logic(), temp_root=slicer.app.temporaryPath, **options)
        self.topology = TopologyLogic(  # the topology panel: `toporeg topology` in the background, heatmap overlays
            slicer.mrmlScene, volumes_logic=slicer.modules.volumes.logic(),
            segmentations_logic=slicer.modules.segmentations.logic(), temp_root=slicer.app.temporaryPath, **options)
        self.uncertainty = UncertaintyLogic(slicer.mrmlScene, temp_root=slicer.app.temporaryPath, **options)
        self.neuralizer = NeuralizerLogic(slicer.mrmlScene, temp_root=slicer.app.temporaryPath, **options)

    def getParameterNode(self):
        return TopoRegParameterNode(super().getParameterNode())

    def inputProblem(self, params) -> str:
        """'' when `params` can run, else a one-line reason (shown on the Apply button)."""
        try:
            self.registration.validate(params)
        except (ValueError, TypeError) as exc:
            return one_line(exc)
        return ""

    def ensureDependencies(self, confirm) -> bool:
        return install.ensure_dependencies(confirm, pip_install=slicer.util.pip_install,
                                           torch_installer=install.pytorch_utils_installer())

    def process(self, params, progressCallback=None, settings=None) -> str:
        """Register now, in this process (blocks); `settings` overrides the preset (RegistrationSettings)."""
        run = as_params(params)
        if settings is not None:
            run.settings = settings
        status = self.registration.run_in_process(run, progressCallback)
        if getattr(params, "outputTransform", None) is None and run.outputTransform is not None:
            params.outputTransform = run.outputTransform
        return status

    def startBackground(self, params, onProgress=None, onDone=None):
        return self.registration.start_background(params, onProgress, onDone)

    def cancel(self):
        self.registration.cancel()


class TopoRegTest(ScriptedLoadableModuleTest):  # noqa: F405
    """Runs the panels' workflows on the bundled sample pair (Colin27 T1 onto MNI152 T1, 2 mm) with tiny budgets.

    In Slicer: enable Developer mode and press "Reload and Test", or run
      Slicer --no-main-window --testing --python-code "import slicer.testing; slicer.testing.runUnitTest(['PATH/TO/TopoReg'], 'TopoReg')"
    Headless (pytest, real MRML + fakes of qt/ctk/app): Testing/slicer/tests/test_slicer_module.py runs this class.
    """

    sampleStride = 1  # voxel stride applied to the sample volumes (the headless pytest run uses 4 for speed)

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TopologyHeatmapSampleData()
        self.setUp()
        self.test_NeuralizerSampleData()
        self.setUp()  # the registration last: its outputs are what the headless run inspects afterwards
        self.test_RegisterSampleData()

    def loadSamplePair(self, with_labels: bool = False):
        self.delayDisplay("Loading sample data")
        loaded = sample_data.load_sample_pair(slicer.mrmlScene, with_labels)  # MNI152, Colin27[, Colin27 AAL]
        for node in loaded if self.sampleStride > 1 else ():
            volume, stride = nodes.volume_from_node(node), self.sampleStride
            affine = volume.affine.copy()
            affine[:3, :3] *= stride
            nodes.update_volume_node(node, volume.__class__(volume.data[::stride, ::stride, ::stride].copy(), affine))
        return loaded

    def test_RegisterSampleData(self):
        import numpy as np
        from toporeg.registration import RegistrationSettings

        from TopoRegLogic import transform_nodes

        scene = slicer.mrmlScene
        fixed, moving = self.loadSamplePair()
        logic = TopoRegLogic()
        params = logic.getParameterNode()
        params.fixedVolume, params.movingVolume = fixed, moving
        params.outputVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Colin27 registered")
        tiny = RegistrationSettings(levels=(4,), iterations=(10,), affine_levels=(4,), affine_iterations=(20,))
        self.delayDisplay("Registering")
        status = logic.process(params, settings=tiny)
        self.delayDisplay(status)
        transform = params.outputTransform
        self.assertTrue(transform.IsA("vtkMRMLGridTransformNode"))
        self.assertIs(moving.GetParentTransformNode(), transform)
        np.testing.assert_allclose(nodes.ijk_to_ras(params.outputVolume), nodes.ijk_to_ras(fixed), atol=1e-6)
        outputs = logic.registration.last["outputs"]
        np.testing.assert_allclose(transform_nodes.displacement_from_node(transform), outputs.displacement_ras, atol=1e-5)
        self.assertIn("folding", status)
        self.delayDisplay("Test passed")

    def test_TopologyHeatmapSampleData(self):
        """The topology panel's workflow, waited for: `toporeg topology --preset fast --iterations 3`, heatmap nodes."""
        import numpy as np

        fixed, moving = self.loadSamplePair()
        logic = TopoRegLogic().topology
        self.delayDisplay("Computing the topology heatmap")
        runner = logic.start_background(TopologyParameters(fixedVolume=fixed, movingVolume=moving, preset="fast",
                                                           iterations=3))
        self.assertEqual(runner.wait(timeout=900), "succeeded", logic.last.get("log", ""))
        self.delayDisplay(logic.last["status"])
        self.assertIn("skull and scalp will show", logic.last["status"])  # whole-head Colin27, skull-stripped MNI152
        heatmap, display = logic.last["heatmap"], logic.last["display"]
        self.assertIs(slicer.mrmlScene.GetNodeByID(heatmap.GetID()), heatmap)
        for node in (heatmap, display):  # on the fixed grid, finite
            self.assertEqual(node.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
            np.testing.assert_allclose(nodes.ijk_to_ras(node), nodes.ijk_to_ras(fixed), atol=1e-6)
            self.assertTrue(np.isfinite(slicer.util.arrayFromVolume(node)).all(), node.GetName())
        self.assertTrue(display.GetAttribute("TopoReg.legend.1"), "legend attributes on the display map")
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):  # the overlay in every view
            self.assertEqual(composite.GetForegroundVolumeID(), display.GetID())
        self.delayDisplay("Test passed")

    def test_NeuralizerSampleData(self):
        """The Neuralizer panel's workflow: the left thalamus (AAL 77) on MNI152, taught by one Colin27 pair."""
        import numpy as np

        target, image, labels = self.loadSamplePair(with_labels=True)
        logic = TopoRegLogic().neuralizer
        self.delayDisplay("Neuralizer: segmenting from one context pair")
        params = NeuralizerParameters(targetVolume=target, contextPairs=((image, labels),), labelValue=77)
        runner = logic.start_background(params)
        self.assertEqual(runner.wait(timeout=900), "succeeded", logic.last.get("log", ""))
        self.delayDisplay(logic.last["status"])
        output = logic.last["output"]
        self.assertTrue(output.IsA("vtkMRMLSegmentationNode"))
        segmentation = output.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        matrix = vtk.vtkMatrix4x4()  # the mask lies on the target's own grid
        output.GetBinaryLabelmapInternalRepresentation(segmentation.GetNthSegmentID(0)).GetImageToWorldMatrix(matrix)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), nodes.ijk_to_ras(target), atol=1e-6)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentation.GetNthSegmentID(0), target)
        self.assertGreater(int(mask.sum()), 0, "the thalamus mask is empty")
        self.delayDisplay("Test passed")
