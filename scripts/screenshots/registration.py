"""Resources/Screenshots/TopoReg-Registration.png: Colin27 registered onto ICBM152, overlay and Jacobian.

1. Registers the bundled Colin27 T1 onto the ICBM152 (MNI) T1 with the library's "default" preset on the CPU and
   writes fixed / warped / Jacobian determinant as NIfTI into the work folder.
2. Loads them through the app's IO manager into six offscreen slice views and captures them;
3. montage: top row fixed + warped moving at 50 % opacity, bottom row the Jacobian determinant inside the MNI brain
   mask, diverging map centred at 1.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import figure, views
from .common import SCREENSHOTS, log

OUT = SCREENSHOTS / "TopoReg-Registration.png"
VIEW_PX = 480          # each captured slice view is VIEW_PX x VIEW_PX
JAC_RANGE = (0.5, 1.5)  # colour-map range of the Jacobian overlay, centred at 1
OUTSIDE = -1000.0      # Jacobian value written outside the brain mask (thresholded away)
FILES = {"fixed": "fixed_mni152_t1.nii.gz", "warped": "warped_colin27_t1.nii.gz", "jacobian": "jacobian.nii.gz",
         "jacobian_brain": "jacobian_brain.nii.gz"}
ROWS = (("overlay", "fixed ICBM152 T1 (skull-stripped) + warped Colin27 T1 (50 % opacity)"),
        ("jacobian", "Jacobian determinant (0.5–1.5, centred at 1), inside the ICBM152 brain mask"))


def make(workdir: Path, out: Path = OUT, reuse: bool = False) -> None:
    paths = {k: workdir / v for k, v in FILES.items()}
    if not (reuse and all(p.exists() for p in paths.values())):
        paths = run_registration(workdir)
    t0 = time.perf_counter()
    captures, jacobian_colors = render_views(paths, workdir)
    log(f"rendered 6 slice views in {time.perf_counter() - t0:.1f} s")
    montage(captures, jacobian_colors, out)
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def run_registration(workdir: Path) -> dict[str, Path]:
    import numpy as np
    from toporeg.data import sample_path
    from toporeg.io import load_volume, save_volume
    from toporeg.io.volume import Volume
    from toporeg.registration import preset, register

    fixed = load_volume(sample_path("mni152_t1_2mm.nii.gz"))
    moving = load_volume(sample_path("colin27_t1_2mm.nii.gz"))
    moving_mask = load_volume(sample_path("colin27_brainmask_2mm.nii.gz"), is_label=True)
    fixed_mask = load_volume(sample_path("mni152_brainmask_2mm.nii.gz"), is_label=True)

    t0 = time.perf_counter()
    result = register(fixed, moving, preset("default"), moving_mask=moving_mask, device="cpu")
    log(f"registration {time.perf_counter() - t0:.1f} s, folding fraction {result.folding_fraction:.2e}")

    jac = np.asarray(result.jacobian.data, dtype=np.float32)
    mask = np.asarray(fixed_mask.data) > 0
    jac_brain = np.where(mask, jac, np.float32(OUTSIDE)).astype(np.float32)
    inside = jac[mask]
    log(f"Jacobian in brain: min {inside.min():.3f}  p1 {np.percentile(inside, 1):.3f}  "
        f"median {np.median(inside):.3f}  p99 {np.percentile(inside, 99):.3f}  max {inside.max():.3f}")

    volumes = {"fixed": fixed, "warped": result.warped, "jacobian": result.jacobian,
               "jacobian_brain": Volume(jac_brain, np.asarray(result.jacobian.affine))}
    return {k: Path(save_volume(volumes[k], workdir / name)) for k, name in FILES.items()}


def diverging_color_node(scene, lo: float, hi: float):
    """Procedural blue-white-red colour node (ParaView 'Cool to Warm'), white at (lo + hi) / 2."""
    from slicer import vtkMRMLProceduralColorNode

    node = vtkMRMLProceduralColorNode()
    node.SetName("TopoRegJacobianDiverging")
    node.SetType(vtkMRMLProceduralColorNode.User)
    node.SetAttribute("Category", "TopoReg")
    node.SetHideFromEditors(False)
    ctf = node.GetColorTransferFunction()
    ctf.RemoveAllPoints()
    ctf.SetColorSpaceToDiverging()
    ctf.AddRGBPoint(lo, 0.230, 0.299, 0.754)
    ctf.AddRGBPoint(0.5 * (lo + hi), 0.865, 0.865, 0.865)
    ctf.AddRGBPoint(hi, 0.706, 0.016, 0.150)
    ctf.ClampingOn()
    scene.AddNode(node)
    return node


def render_views(paths: dict[str, Path], workdir: Path):
    """(captures {(row, orientation): PNG}, the Jacobian's colour node)."""
    app = views.slicer_app()
    fixed, warped, jac = app.io_manager.load_volumes([str(paths["fixed"]), str(paths["warped"]),
                                                      str(paths["jacobian_brain"])])

    # Grey-scale window/level: same for fixed and warped so the overlay compares like with like.
    for node in (fixed, warped):
        d = node.GetDisplayNode()
        d.AutoWindowLevelOff()
        d.SetWindowLevelMinMax(*_robust_range(node))
        d.SetInterpolate(True)

    lo, hi = JAC_RANGE
    colors = diverging_color_node(app.scene, lo, hi)
    jd = jac.GetDisplayNode()
    jd.SetAndObserveColorNodeID(colors.GetID())
    jd.AutoWindowLevelOff()
    jd.SetWindowLevelMinMax(lo, hi)
    jd.AutoThresholdOff()
    jd.SetThreshold(1e-3, 1e6)   # hide outside the brain mask (and the interpolated rim towards OUTSIDE)
    jd.ApplyThresholdOn()
    jd.SetInterpolate(True)

    captures: dict[tuple[str, str], Path] = {}
    for row, (fg, opacity) in {"overlay": (warped, 0.5), "jacobian": (jac, 0.6)}.items():
        for ori in views.ORIENTATIONS:
            tag = f"{row}_{ori}"
            view = views.add_slice_view(app, ori, tag, VIEW_PX)
            view.set_background_volume_id(fixed.GetID())
            view.set_foreground_volume_id(fg.GetID())
            view.set_foreground_opacity(opacity)
            views.show_standard_slice(view, ori)
            captures[(row, ori)] = views.capture(view, workdir / f"{tag}.png")
    return captures, colors


def _robust_range(node) -> tuple[float, float]:
    import numpy as np
    from vtkmodules.util.numpy_support import vtk_to_numpy

    a = vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).astype(np.float32)
    a = a[a > np.percentile(a, 5)]
    return float(np.percentile(a, 0.5)), float(np.percentile(a, 99.5))


def montage(captures: dict[tuple[str, str], Path], jacobian_colors, out: Path) -> None:
    pad, title_h, footer_h = 8, 30, 34
    W = 3 * VIEW_PX + 4 * pad
    H = 2 * (title_h + VIEW_PX) + 3 * pad + footer_h
    image, draw = figure.canvas(W, H)
    f_title, f_small = figure.font(18), figure.font(15)
    lo, hi = JAC_RANGE
    y = pad
    for row, title in ROWS:
        draw.text((pad, y + 5), title, fill=(235, 235, 235), font=f_title)
        if row == "jacobian":
            figure.color_bar(image, draw, jacobian_colors.GetScalarsToColors(), lo, hi, W - pad - 320, y + 6, 300,
                             14, f_small, (f"{lo:g}", f"{hi:g}"), mid_tick=True)
        y += title_h
        figure.paste_views(image, draw, {ori: captures[(row, ori)] for ori in views.ORIENTATIONS}, pad, y, VIEW_PX,
                           pad, f_small)
        y += VIEW_PX + pad
    draw.text((pad, H - footer_h + 6),
              "TopoReg default preset, Colin27 → ICBM152, 2 mm, CPU   ·   rendered with real Slicer "
              "slice views (slicer-core + trame-slicer, offscreen)",
              fill=(190, 190, 190), font=f_small)
    figure.save(image, out)
