"""Real Slicer slice views without the desktop app: a trame-slicer `SlicerApp` (real MRML scene, slice logics and
displayable managers), offscreen `DirectViewFactory` views rendered through EGL, captured with
`vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage`."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
VIEW_COLORS = {"Axial": "#F34A33", "Coronal": "#6DAD4A", "Sagittal": "#EFD64D"}   # Slicer's red / green / yellow
# Slice positions in RAS mm (MNI space, where both templates are): through the lateral ventricles / basal ganglia,
# the thalamus and the left hemisphere (x=-28: insula, hippocampus), the usual ones for a brain figure.
SLICE_RAS = {"Axial": 12.0, "Coronal": -16.0, "Sagittal": -28.0}


def slicer_app(*, module_scene: bool = False):
    """A `SlicerApp` whose views render offscreen. `module_scene`: also make it `slicer.mrmlScene`, as the
    module's logic expects in Slicer."""
    import slicer
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    if module_scene:
        slicer.mrmlScene = app.scene
    return app


def add_slice_view(app, orientation: str, label: str, px: int):
    """One `px` x `px` slice view on a black background (its composite / slice nodes join the scene). It renders
    only when captured: the direct factory's default re-renders on every MRML event (e.g. each segment added)."""
    from trame_slicer.views import ViewLayoutDefinition
    from trame_slicer.views.render_scheduler import NoScheduleRendering

    view = app.view_manager.create_view(ViewLayoutDefinition.slice_view(orientation, label=label,
                                                                        color=VIEW_COLORS[orientation]))
    view.set_scheduled_render(NoScheduleRendering())
    view.render_window().SetSize(px, px)
    view.update_size(px, px)
    view.set_background_color([0, 0, 0])
    return view


def add_slice_views(app, prefix: str, px: int) -> dict:
    """Axial, coronal and sagittal views, created before a panel runs so that it finds their composite nodes."""
    return {ori: add_slice_view(app, ori, f"{prefix}_{ori}", px) for ori in ORIENTATIONS}


def show_standard_slice(view, orientation: str) -> None:
    """Whole volume in view, slice at `SLICE_RAS` (clamped to the volume)."""
    view.fit_view_to_content()
    lo, hi = view.get_slice_range()
    view.set_slice_value(min(max(SLICE_RAS[orientation], lo), hi))


def capture(view, path: Path) -> Path:
    """Render the view and write what its render window shows as PNG."""
    from slicer import vtkMRMLLayerDisplayableManager
    from vtkmodules.vtkIOImage import vtkPNGWriter

    view.render()
    image = vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage(view.render_window())
    writer = vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    return path


def label_color_node(scene, name: str, label: str, rgb: tuple[float, float, float], *, value: int = 1,
                     size: int = 2):
    """A one-label colour table: label `value` in `rgb`, every other entry of the `size` (at least value + 1) entries
    transparent, so that one label of a multi-label map (e.g. AAL's 116 regions: size 117) can be shown alone."""
    from slicer import vtkMRMLColorTableNode

    node = vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(max(size, value + 1))
    for entry in range(node.GetNumberOfColors()):
        node.SetColor(entry, "background" if entry == 0 else f"label {entry}", 0.0, 0.0, 0.0, 0.0)
    node.SetColor(value, label, *rgb, 1.0)
    scene.AddNode(node)
    return node
