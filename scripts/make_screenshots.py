#!/usr/bin/env python
"""Render the README / extension-catalogue screenshot from REAL Slicer slice views.

    scripts/env.sh python scripts/make_screenshots.py            # ~40 s on 2 CPU cores (8 s registration, ~15 s llvmpipe rendering)
    scripts/env.sh python scripts/make_screenshots.py --workdir /tmp/shots --reuse   # skip the registration

1. Registers the bundled Colin27 T1 onto the ICBM152 (MNI) T1 with the library's "default" preset on
   the CPU and writes fixed / warped / Jacobian determinant as NIfTI into a work folder.
2. Loads them into a trame-slicer `SlicerApp` (real MRML scene, slice logics and displayable
   managers) with offscreen `DirectViewFactory` views rendered through EGL, captures each view with
   `vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage`, and
3. montages the six captures (top row: fixed + warped moving at 50 % opacity, bottom row: Jacobian
   determinant inside the MNI brain mask, diverging map centred at 1) into
   Resources/Screenshots/TopoReg-Registration.png.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "Resources" / "Screenshots" / "TopoReg-Registration.png"

VIEW_PX = 480          # each captured slice view is VIEW_PX x VIEW_PX
JAC_RANGE = (0.5, 1.5)  # colour-map range of the Jacobian overlay, centred at 1
OUTSIDE = -1000.0      # Jacobian value written outside the brain mask (thresholded away)


def log(msg: str) -> None:
    print(f"[make_screenshots] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# 1. registration
# --------------------------------------------------------------------------------------------
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

    paths = {
        "fixed": save_volume(fixed, workdir / "fixed_mni152_t1.nii.gz"),
        "warped": save_volume(result.warped, workdir / "warped_colin27_t1.nii.gz"),
        "jacobian": save_volume(result.jacobian, workdir / "jacobian.nii.gz"),
        "jacobian_brain": save_volume(Volume(jac_brain, np.asarray(result.jacobian.affine)),
                                      workdir / "jacobian_brain.nii.gz"),
    }
    return {k: Path(v) for k, v in paths.items()}


# --------------------------------------------------------------------------------------------
# 2. real Slicer slice views, offscreen
# --------------------------------------------------------------------------------------------
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
    mid = 0.5 * (lo + hi)
    ctf.AddRGBPoint(lo, 0.230, 0.299, 0.754)
    ctf.AddRGBPoint(mid, 0.865, 0.865, 0.865)
    ctf.AddRGBPoint(hi, 0.706, 0.016, 0.150)
    ctf.ClampingOn()
    scene.AddNode(node)
    return node


def capture(view, path: Path) -> None:
    from slicer import vtkMRMLLayerDisplayableManager
    from vtkmodules.vtkIOImage import vtkPNGWriter

    view.render()
    image = vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage(view.render_window())
    writer = vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()


def render_views(paths: dict[str, Path], workdir: Path) -> dict[tuple[str, str], Path]:
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))

    fixed, warped, jac = app.io_manager.load_volumes([str(paths["fixed"]), str(paths["warped"]),
                                                      str(paths["jacobian_brain"])])

    # Grey-scale window/level: same for fixed and warped so the overlay compares like with like.
    for node in (fixed, warped):
        d = node.GetDisplayNode()
        d.AutoWindowLevelOff()
        d.SetWindowLevelMinMax(*_robust_range(node))
        d.SetInterpolate(True)

    lo, hi = JAC_RANGE
    jd = jac.GetDisplayNode()
    jd.SetAndObserveColorNodeID(diverging_color_node(app.scene, lo, hi).GetID())
    jd.AutoWindowLevelOff()
    jd.SetWindowLevelMinMax(lo, hi)
    jd.AutoThresholdOff()
    jd.SetThreshold(1e-3, 1e6)   # hide outside the brain mask (and the interpolated rim towards OUTSIDE)
    jd.ApplyThresholdOn()
    jd.SetInterpolate(True)

    rows = {
        "overlay": (warped, 0.5),
        "jacobian": (jac, 0.6),
    }
    orientations = ("Axial", "Coronal", "Sagittal")
    colors = {"Axial": "#F34A33", "Coronal": "#6DAD4A", "Sagittal": "#EFD64D"}
    captures: dict[tuple[str, str], Path] = {}
    for row, (fg, opacity) in rows.items():
        for ori in orientations:
            tag = f"{row}_{ori}"
            view = app.view_manager.create_view(
                ViewLayoutDefinition.slice_view(ori, label=tag, color=colors[ori]))
            view.render_window().SetSize(VIEW_PX, VIEW_PX)
            view.update_size(VIEW_PX, VIEW_PX)
            view.set_background_volume_id(fixed.GetID())
            view.set_foreground_volume_id(fg.GetID())
            view.set_foreground_opacity(opacity)
            view.set_background_color([0, 0, 0])
            view.fit_view_to_content()
            _centre_slice(view, fixed, ori)
            captures[(row, ori)] = workdir / f"{tag}.png"
            capture(view, captures[(row, ori)])
    return captures


def _robust_range(node) -> tuple[float, float]:
    import numpy as np
    from vtkmodules.util.numpy_support import vtk_to_numpy

    a = vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).astype(np.float32)
    a = a[a > np.percentile(a, 5)]
    return float(np.percentile(a, 0.5)), float(np.percentile(a, 99.5))


# Slice positions in RAS mm (MNI space): through the lateral ventricles / basal ganglia, the
# thalamus and the left hemisphere (x=-28: insula, hippocampus), the usual ones for a brain figure.
SLICE_RAS = {"Axial": 12.0, "Coronal": -16.0, "Sagittal": -28.0}


def _centre_slice(view, fixed, ori: str) -> None:
    lo, hi = view.get_slice_range()
    value = min(max(SLICE_RAS[ori], lo), hi)
    view.set_slice_value(value)


# --------------------------------------------------------------------------------------------
# 3. montage
# --------------------------------------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def montage(captures: dict[tuple[str, str], Path], out: Path) -> None:
    from PIL import Image, ImageDraw

    orientations = ("Axial", "Coronal", "Sagittal")
    rows = (("overlay", "fixed ICBM152 T1 (skull-stripped) + warped Colin27 T1 (50 % opacity)"),
            ("jacobian", "Jacobian determinant (0.5–1.5, centred at 1), inside the ICBM152 brain mask"))
    pad, title_h, footer_h, bar_h = 8, 30, 34, 0
    W = 3 * VIEW_PX + 4 * pad
    H = 2 * (title_h + VIEW_PX) + 3 * pad + footer_h
    canvas = Image.new("RGB", (W, H), (24, 24, 26))
    draw = ImageDraw.Draw(canvas)
    f_title, f_small = _font(18), _font(15)
    y = pad
    for row, title in rows:
        draw.text((pad, y + 5), title, fill=(235, 235, 235), font=f_title)
        if row == "jacobian":
            _colorbar(canvas, draw, W - pad - 320, y + 6, 300, 14, f_small)
        y += title_h
        for i, ori in enumerate(orientations):
            x = pad + i * (VIEW_PX + pad)
            im = Image.open(captures[(row, ori)]).convert("RGB").resize((VIEW_PX, VIEW_PX))
            canvas.paste(im, (x, y))
            draw.text((x + 8, y + 6), ori.lower(), fill=(255, 255, 255), font=f_small)
        y += VIEW_PX + pad
    draw.text((pad, H - footer_h + 6),
              "TopoReg default preset, Colin27 → ICBM152, 2 mm, CPU   ·   rendered with real Slicer "
              "slice views (slicer-core + trame-slicer, offscreen)",
              fill=(190, 190, 190), font=f_small)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas = canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=256) \
        if os.environ.get("TOPOREG_SCREENSHOT_PALETTE") else canvas
    canvas.save(out, optimize=True)


def _colorbar(canvas, draw, x, y, w, h, font) -> None:
    import numpy as np
    from PIL import Image

    lo, hi = JAC_RANGE
    # same points as the colour node, diverging interpolation done by VTK itself
    from vtkmodules.vtkRenderingCore import vtkColorTransferFunction

    ctf = vtkColorTransferFunction()
    ctf.SetColorSpaceToDiverging()
    ctf.AddRGBPoint(lo, 0.230, 0.299, 0.754)
    ctf.AddRGBPoint(0.5 * (lo + hi), 0.865, 0.865, 0.865)
    ctf.AddRGBPoint(hi, 0.706, 0.016, 0.150)
    vals = np.linspace(lo, hi, w)
    rgb = (np.array([ctf.GetColor(v) for v in vals]) * 255).astype(np.uint8)
    bar = np.repeat(rgb[None], h, axis=0)
    lx = x - 34
    draw.text((lx, y - 1), f"{lo:g}", fill=(220, 220, 220), font=font)
    canvas.paste(Image.fromarray(bar), (x, y))
    draw.text((x + w + 6, y - 1), f"{hi:g}", fill=(220, 220, 220), font=font)
    draw.line([(x + w // 2, y - 3), (x + w // 2, y + h + 2)], fill=(30, 30, 30), width=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None, help="keep intermediate files here")
    p.add_argument("--reuse", action="store_true", help="reuse registration outputs found in --workdir")
    args = p.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="toporeg-shots-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)

    names = {"fixed": "fixed_mni152_t1.nii.gz", "warped": "warped_colin27_t1.nii.gz",
             "jacobian": "jacobian.nii.gz", "jacobian_brain": "jacobian_brain.nii.gz"}
    paths = {k: workdir / v for k, v in names.items()}
    if not (args.reuse and all(p.exists() for p in paths.values())):
        paths = run_registration(workdir)
    t0 = time.perf_counter()
    captures = render_views(paths, workdir)
    log(f"rendered 6 slice views in {time.perf_counter() - t0:.1f} s")
    montage(captures, args.out)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
