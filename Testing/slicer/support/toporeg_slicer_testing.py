"""Fixtures and helpers for TopoReg's Slicer-module tests (loaded by Testing/slicer/conftest.py).

Real: the MRML scene, `vtkSlicerApplicationLogic`, the Volumes / Transforms / Segmentations / Terminologies /
SubjectHierarchy / Markups / Data logics, three slice logics, storage nodes, `slicer.util` (slicer-core wheel).
FAKE (Testing/slicer/fakes/, each file says so): `qt`, `ctk`, qMRML widgets, `slicer.ScriptedLoadableModule`,
`slicer.parameterNodeWrapper`, `slicer.i18n`, `slicer.app`. They are process-global once installed, but
nothing else in the test suite imports `qt`, `ctk` or `slicer`.

Why `slicer` is imported here with care: slicer-core's `slicer/__init__.py` runs `pkgutil.extend_path` and
imports *every* module found in any `slicer/` folder on sys.path. Pytest puts `Testing/` on sys.path, so a
plain `import slicer` would merge `Testing/slicer/` into the `slicer` namespace and import this folder's
conftest as `slicer.conftest`. `import_slicer()` hides those entries during the first import, then adds the
fakes' folder to `slicer.__path__` explicitly (so `slicer.ScriptedLoadableModule` is the module, as in
Slicer, not the class that the name re-export would make it). For the same reason Testing/slicer/ holds no
test modules itself (they live in `tests/`) and its conftest does nothing when imported as `slicer.conftest`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
SLICER_TESTS = HERE.parent
FAKES = SLICER_TESTS / "fakes"
REPO = SLICER_TESTS.parent.parent
MODULE_DIR = REPO / "TopoReg"
SAMPLE_DATA = REPO / "Resources" / "SampleData"


def import_slicer():
    """Import slicer-core's `slicer` without merging test folders, then add the fakes. Idempotent."""
    if "slicer" not in sys.modules:
        hidden = [p for p in sys.path if (Path(p or ".") / "slicer").resolve() == SLICER_TESTS]
        for entry in hidden:
            sys.path.remove(entry)
        try:
            importlib.import_module("slicer")
        finally:
            sys.path[:0] = hidden
    import slicer

    if any(Path(p).resolve() == SLICER_TESTS for p in slicer.__path__):
        raise RuntimeError("Testing/slicer was merged into the slicer package: something imported slicer "
                           "with Testing/ on sys.path before Testing/slicer/conftest.py ran")
    if str(FAKES) not in sys.path:
        sys.path.insert(0, str(FAKES))           # qt, ctk, fake_slicer_widgets, fake_slicer_app
    if str(FAKES / "slicer") not in slicer.__path__:
        slicer.__path__.append(str(FAKES / "slicer"))
    for name in ("ScriptedLoadableModule", "parameterNodeWrapper", "i18n"):
        importlib.import_module(f"slicer.{name}")
    import fake_slicer_widgets

    for name, cls in fake_slicer_widgets.WIDGET_CLASSES.items():
        setattr(slicer, name, cls)
    for path in (str(MODULE_DIR),):               # TopoReg.py and the TopoRegLogic package
        if path not in sys.path:
            sys.path.insert(0, path)
    return slicer


class _LogicShim:
    """`slicer.modules.<name>`: desktop module objects only need `.logic()` here."""

    def __init__(self, logic, path=None):
        self._logic, self.path = logic, path

    def logic(self):
        return self._logic


class MiniSlicer:
    """A headless Slicer application (slicer_core.md §2.2): real scene and logics, no Qt."""

    def __init__(self, temp_dir: Path):
        slicer = import_slicer()
        import vtk
        from fake_slicer_app import FakeSlicerApplication

        self.scene = scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        scene.AddNode(crosshair)
        self.app_logic = app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(scene)
        app.GetColorLogic().SetMRMLScene(scene)
        app.GetColorLogic().AddDefaultColorNodes()
        # registered by the Colors module's vtkSlicerColorLogic in Slicer (its default colour files are not shipped here)
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        app.SetSliceLogics(vtk.vtkCollection())
        app.SetViewLogics(vtk.vtkCollection())
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
        terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
        terminologies.SetModuleShareDirectory(str(_terminology_dir()))
        self.logics = {
            "Terminologies": terminologies, "Volumes": slicer.vtkSlicerVolumesLogic(),
            "Transforms": slicer.vtkSlicerTransformLogic(), "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
            "SubjectHierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(), "Markups": slicer.vtkSlicerMarkupsLogic(),
            "Data": slicer.vtkSlicerDataModuleLogic()}
        for name, logic in self.logics.items():
            logic.SetMRMLScene(scene)
            logic.SetMRMLApplicationLogic(app)
            app.SetModuleLogic(name, logic)
        self.slice_logics = []
        for name in ("Red", "Yellow", "Green"):
            slice_logic = slicer.vtkMRMLSliceLogic()
            slice_logic.SetMRMLScene(scene)
            slice_logic.SetMRMLApplicationLogic(app)
            slice_logic.AddSliceNode(name)
            app.GetSliceLogics().AddItem(slice_logic)
            self.slice_logics.append(slice_logic)
        slicer.mrmlScene = scene
        slicer.modules = SimpleNamespace(**{name.lower(): _LogicShim(logic) for name, logic in self.logics.items()},
                                         toporeg=_LogicShim(None, str(MODULE_DIR / "TopoReg.py")))
        slicer.app = FakeSlicerApplication(temp_dir)
        self.temp_dir = Path(temp_dir)

    @property
    def volumes_logic(self):
        return self.logics["Volumes"]

    def close(self):
        self.scene.Clear(1)


def _terminology_dir() -> Path:
    import trame_slicer

    return Path(trame_slicer.__file__).resolve().parent / "resources" / "terminologies"


# --- data -------------------------------------------------------------------------------------------
def tiny_settings(transform: str = "svf"):
    """A registration budget small enough for a loaded 2-core machine (a few seconds per run)."""
    from toporeg.registration import RegistrationSettings

    return RegistrationSettings(transform=transform, levels=(2,), iterations=(10,), affine_levels=(2,),
                                affine_iterations=(10,))


def oblique_affine(spacing=(2.0, 1.8, 2.5), angles=(0.3, -0.2, 0.5), origin=(-20.0, 15.0, 8.0)) -> np.ndarray:
    from toporeg.transforms import rotation_matrix

    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(angles) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def blobs(shape, seed=0, n=8) -> np.ndarray:
    """Smooth structured test image in [0, 1] (Gaussian blobs with soft edges)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    image = np.zeros(shape, np.float32)
    for _ in range(n):
        centre = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        width = rng.uniform(0.1, 0.2) * min(shape)
        image += rng.uniform(0.5, 1.5) * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * width**2))
    return (image / image.max()).astype(np.float32)


def downsampled_node(mini: MiniSlicer, node, factor: int, name: str):
    """Every `factor`-th voxel of a volume node as a new node; geometry stays exact (IJKToRAS columns scaled)."""
    from TopoRegLogic import nodes

    volume = nodes.volume_from_node(node)
    affine = volume.affine.copy()
    affine[:3, :3] = affine[:3, :3] * factor
    return nodes.new_volume_node(mini.scene, volume.__class__(
        np.ascontiguousarray(volume.data[::factor, ::factor, ::factor]), affine), name)


def save_scene(mini: MiniSlicer, folder: Path) -> None:
    """What File > Save does: every shown volume and transform through its storage node, then the scene as .mrml."""
    import slicer

    folder.mkdir(parents=True, exist_ok=True)
    for node in slicer.util.getNodesByClass("vtkMRMLStorableNode", mini.scene):
        if node.GetHideFromEditors() or not (node.IsA("vtkMRMLVolumeNode") or node.IsA("vtkMRMLTransformNode")):
            continue
        storage = node.GetStorageNode() or node.CreateDefaultStorageNode()
        if node.GetStorageNode() is None:
            mini.scene.AddNode(storage)
            node.SetAndObserveStorageNodeID(storage.GetID())
        suffix = ".h5" if node.IsA("vtkMRMLTransformNode") else ".nrrd"
        storage.SetFileName(str(folder / f"{node.GetID()}{suffix}"))
        assert storage.WriteData(node), node.GetName()
    mini.scene.SetRootDirectory(str(folder))
    mini.scene.SetURL(str(folder / "scene.mrml"))
    assert mini.scene.Commit()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def assert_overlay_on_every_slice_view(scene, background, foreground, *, opacity: float, window: tuple[float, float],
                                       threshold: float, color_name: str) -> list:
    """The overlay contract shared by the topology and uncertainty panels: `foreground` over `background` in all
    three slice views at `opacity`, with a fixed window, a lower threshold and the panel's colour table.
    Returns the composite nodes."""
    import pytest
    from TopoRegLogic.nodes import scene_nodes

    composites = scene_nodes(scene, "vtkMRMLSliceCompositeNode")
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == background.GetID()
        assert composite.GetForegroundVolumeID() == foreground.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(opacity)
    shown = foreground.GetDisplayNode()
    assert shown.GetColorNode().GetName() == color_name and not shown.GetAutoWindowLevel()
    assert (shown.GetWindowLevelMin(), shown.GetWindowLevelMax()) == window
    assert shown.GetApplyThreshold() and shown.GetLowerThreshold() == pytest.approx(threshold)
    return composites


def blended_slice(slice_logic, opacity: float) -> np.ndarray:
    """The slice logic's own blended RGBA pixels (no OpenGL) with the foreground at `opacity`: (pixels, 4)."""
    from vtk.util.numpy_support import vtk_to_numpy

    slice_logic.GetSliceCompositeNode().SetForegroundOpacity(opacity)
    connection = slice_logic.GetImageDataConnection()
    connection.GetProducer().Update()
    image = connection.GetProducer().GetOutputDataObject(connection.GetIndex())
    return vtk_to_numpy(image.GetPointData().GetScalars()).astype(float)


def record_progress(panel) -> list[float]:
    """Every progress fraction a panel receives, in order. The progress bar shows only the last event of each timer
    tick, so a fast run can jump from 0 to 100 between two polls; the events themselves cannot."""
    fractions: list[float] = []
    shown = panel.onProgress
    panel.onProgress = lambda event: (fractions.append(event.fraction), shown(event))
    return fractions


def wait_for_background_run(timeout: float, read=None) -> list:
    """Fire the (fake) QTimer as Slicer's 200 ms timer would, until the run stops it or `timeout` seconds pass;
    returns `read()` after each tick (e.g. the progress bar's value)."""
    import time

    import qt

    start, seen = time.monotonic(), []
    while qt.QTimer.active and time.monotonic() - start < timeout:
        qt.QTimer.fire_all()
        if read is not None:
            seen.append(read())
        time.sleep(0.05)
    return seen
