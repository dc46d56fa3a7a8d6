"""The headless Slicer runtime of the web app: trame-slicer's `SlicerApp` (scene, application logic, module logics),
four real Slicer views streamed by trame-rca, and the Slicer module's own panel logics wired to that scene.

Why this wiring and no other: the panel logics (`TopoRegLogic`) take their scene, module logics and temporary folder
as arguments, exactly as the desktop module passes them; `slicer.util` helpers they call read `slicer.mrmlScene`, and
scene-level helpers read `slicer.modules.<name>.logic()`, so both point at the SlicerApp's. The temporary folder is a
real one made for this server (the desktop uses `slicer.app.temporaryPath`) and removed when the server exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import slicer
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from TopoRegLogic import nodes
from TopoRegLogic.neuralizer_logic import NeuralizerLogic
from TopoRegLogic.registration_logic import RegistrationLogic
from TopoRegLogic.topology_logic import TopologyLogic
from TopoRegLogic.uncertainty_logic import UncertaintyLogic

from .data_folder import DataFolder, looks_like_label

LAYOUT_ID = "TopoReg four-up"
VIEW_TITLES = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal", "ThreeD": "3D"}
LABEL_CLASS, SEGMENTATION_CLASS = "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"


def compact_legend(node, size: tuple[float, float] = (0.1, 0.4)) -> None:
    """An overlay's colour legend in the views (the logic's), made to fit the page's smaller views: a smaller legend
    (its text scales with its size) and the heatmap's one-line title (with the nats at both ends) on two lines."""
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
    if legend is None:
        return
    legend.SetTitleText(legend.GetTitleText().replace(", log scale: ", " (log scale)\n"))
    legend.SetSize(*size)


class _LogicShim:
    """`slicer.modules.<name>`: only `.logic()` exists outside the desktop application."""

    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


def four_up_layout() -> Layout:
    """Slicer's "Four-Up": axial | 3D on top, sagittal | coronal below."""
    return Layout(LayoutDirection.Vertical, [
        Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.threed_view()]),
        Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.sagittal_view(),
                                            ViewLayoutDefinition.coronal_view()])])


def _view_label(server, view_id: str, view) -> None:
    """trame-slicer's own gutter (reset camera, slice slider) plus a title whose id lets tests find each view."""
    from trame.widgets import html
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui

    tag = view.get_singleton_tag()
    if tag in ("Red", "Yellow", "Green"):
        create_vertical_slice_view_gutter_ui(server, view_id, view)
    else:
        create_vertical_view_gutter_ui(server, view_id, view)
    html.Div(VIEW_TITLES.get(tag, tag), id=f"toporeg-view-{tag}", classes="toporeg-view-title",
             style="position:absolute;top:4px;right:8px;color:#ddd;font:12px sans-serif;pointer-events:none;")


class WebRuntime:
    """One scene for the whole server (trame state is shared by every connected page, and so is this)."""

    def __init__(self, server, data: DataFolder, work_dir: str | Path | None = None):
        self.server, self.data = server, data
        self.app = SlicerApp()
        self.scene = self.app.scene
        # registered by the desktop Colors module; the heatmap's colour legend needs it
        self.scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        slicer.mrmlScene = self.scene
        slicer.modules = SimpleNamespace(
            volumes=_LogicShim(self.app.volumes_logic), segmentations=_LogicShim(self.app.segmentations_logic),
            terminologies=_LogicShim(self.app.terminologies_logic), colors=_LogicShim(self.app.color_logic))
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="toporeg-serve-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if work_dir is None:
            atexit.register(shutil.rmtree, self.work_dir, True)
        runs = self.work_dir / "runs"
        common = {"volumes_logic": self.app.volumes_logic, "segmentations_logic": self.app.segmentations_logic}
        self.registration = RegistrationLogic(self.scene, temp_root=runs, **common)
        self.topology = TopologyLogic(self.scene, temp_root=runs, **common)
        self.uncertainty = UncertaintyLogic(self.scene, temp_root=runs)
        self.neuralizer = NeuralizerLogic(self.scene, temp_root=runs, context_folder=self.work_dir / "context_sets")
        register_rca_factories(self.app.view_manager, server, slice_view_ui_f=_view_label,
                               three_d_view_ui_f=_view_label, target_fps=20.0, blur_fps=5.0)
        self.layout_manager = LayoutManager(self.scene, self.app.view_manager, server)
        self.layout_manager.register_layout(LAYOUT_ID, four_up_layout())
        self.layout_manager.set_layout(LAYOUT_ID)

    # --- data -------------------------------------------------------------------------------------------
    def load(self, name: str, as_label: bool | None = None):
        """Load `name` (relative to the data folder; confined by `DataFolder.resolve`) into a new volume node.
        `as_label` None: a label map when the file name says so (mask, labels, AAL, tissue, segmentation)."""
        path = self.data.resolve(name)
        label = looks_like_label(path.name) if as_label is None else bool(as_label)
        node = nodes.load_volume_node(self.scene, path, path.name.split(".")[0], label=label)
        if not label and self.background() is None:
            self.show_background(node)
        return node

    def background(self):
        views = self.app.view_manager.get_slice_views()
        volume_id = views[0].get_background_volume_id() if views else None
        return self.scene.GetNodeByID(volume_id) if volume_id else None

    def show_background(self, node, reset: bool = True) -> None:
        """`node` as the background of every slice view, the slices shown in 3D; views fitted to it."""
        self.app.display_manager.show_volume_in_slice_background(node)
        for view in self.app.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        if reset:
            self.app.display_manager.reset_views()
            for view in self.app.view_manager.get_threed_views():  # oblique, so all three planes show
                camera = view.get_camera_node()
                if camera is not None:
                    camera.GetCamera().Azimuth(-35)
                    camera.GetCamera().Elevation(25)
                    camera.GetCamera().OrthogonalizeViewUp()
                    camera.Modified()
                    view.schedule_render()

    def render(self) -> None:
        """Ask every view for a new frame. Needed after display changes made through MRML (opacity, threshold,
        colour map, visibility): trame-slicer re-renders by itself only for changes made through its view API."""
        for view in self.app.view_manager.get_views():
            view.schedule_render()

    def node(self, node_id: str | None):
        return self.scene.GetNodeByID(node_id) if node_id else None

    def volume_items(self) -> dict[str, list[dict]]:
        """The scene's volumes for the page's selects: 'images' (scalar volumes), 'labels' (label maps and
        segmentations) and 'all'. Internal nodes (names starting with '__') are left out."""
        images, labels = [], []
        for node in nodes.scene_nodes(self.scene, "vtkMRMLVolumeNode") + nodes.scene_nodes(self.scene,
                                                                                           SEGMENTATION_CLASS):
            if node.GetName().startswith("__") or node.GetHideFromEditors():
                continue
            item = {"title": node.GetName(), "value": node.GetID()}
            if node.IsA(LABEL_CLASS) or node.IsA(SEGMENTATION_CLASS):
                labels.append(item)
            elif node.IsA("vtkMRMLScalarVolumeNode"):
                images.append(item)
        return {"images": images, "labels": labels, "all": images + labels}

    # --- results ----------------------------------------------------------------------------------------
    def export(self, node) -> Path:
        """Write `node` into the server's work folder for a download: volumes as NIfTI (through the library, exact
        geometry), segmentations as .seg.nrrd, transforms as ITK .h5. Returns the file."""
        folder = Path(tempfile.mkdtemp(prefix="download-", dir=self.work_dir))
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.GetName()).strip("._") or "result"
        if node.IsA(SEGMENTATION_CLASS):
            path = folder / f"{stem}.seg.nrrd"
            self.app.io_manager.write_segmentation(node, path)
        elif node.IsA("vtkMRMLTransformNode"):
            path = folder / f"{stem}.h5"
            storage = slicer.vtkMRMLTransformStorageNode()
            storage.SetFileName(str(path))
            if not storage.WriteData(node):
                raise OSError(f"cannot write transform '{node.GetName()}'")
        elif node.IsA("vtkMRMLScalarVolumeNode"):
            from toporeg.io import save_volume

            volume = nodes.volume_from_node(node)
            if np.asarray(volume.data).dtype == np.float64:
                volume = volume.astype(np.float32)
            path = Path(save_volume(volume, folder / f"{stem}.nii.gz"))
        else:
            raise ValueError(f"'{node.GetName()}' cannot be downloaded")
        if not path.is_file():
            raise OSError(f"writing '{node.GetName()}' produced no file")
        return path
