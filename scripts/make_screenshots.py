#!/usr/bin/env python
"""Render the README / extension-catalogue screenshots from REAL Slicer slice views.

    scripts/env.sh python scripts/make_screenshots.py                        # both PNGs
    scripts/env.sh python scripts/make_screenshots.py --only registration    # ~40 s on 2 CPU cores
    scripts/env.sh python scripts/make_screenshots.py --only topology        # ~2-3 min on 2 CPU cores
    scripts/env.sh python scripts/make_screenshots.py --workdir /tmp/shots --reuse   # skip the computations

Registration (Resources/Screenshots/TopoReg-Registration.png):
1. Registers the bundled Colin27 T1 onto the ICBM152 (MNI) T1 with the library's "default" preset on
   the CPU and writes fixed / warped / Jacobian determinant as NIfTI into a work folder.
2. Loads them into a trame-slicer `SlicerApp` (real MRML scene, slice logics and displayable
   managers) with offscreen `DirectViewFactory` views rendered through EGL, captures each view with
   `vtkMRMLLayerDisplayableManager.RenderWindowBufferToImage`, and
3. montages the six captures (top row: fixed + warped moving at 50 % opacity, bottom row: Jacobian
   determinant inside the MNI brain mask, diverging map centred at 1) into
   Resources/Screenshots/TopoReg-Registration.png.

Topology (Resources/Screenshots/TopoReg-Topology.png), what a user of the topology panel sees:
1. fixed = the bundled ICBM152 2 mm T1 with a synthetic lesion inserted by
   `toporeg.topology.synthetic.insert_lesion` (seed 4: radius 7 voxels, dark core with a bright rim, mass effect
   0.35; the brain mask is warped by the same mass-effect field), moving = the bundled Colin27 2 mm T1, both with
   their brain masks. The lesioned image and the lesion mask are written as NIfTI and loaded as volume nodes.
2. Three offscreen slice views (axial / coronal / sagittal) are created in a trame-slicer `SlicerApp`, then the
   module's own Qt-free logic runs the panel's workflow: `TopologyLogic.start_background(TopologyParameters(...))`
   = the CLI `toporeg topology FIXED MOVING --method optimize --features intensity --preset fast
   --iterations 30 --device cpu --fixed-mask ... --moving-mask ...` (`--preset fast` is `--fast`) in a child
   process, then `apply_results`: heatmap / display-map nodes on the fixed grid, the panel's colour table
   (`topology_display.color_node`: Slicer's "Inferno" on the desktop, its procedural copy "TopoReg Inferno"
   here), window 0-1, threshold 0.25 and 50 % opacity in every slice composite node, legend as node attributes.
   Display nodes are left as the panel leaves them (automatic window/level, Slicer's default interpolation).
   Deterministic: fixed lesion seed, the CLI's own fixed seeds, CPU (two runs gave bit-identical heatmaps).
3. The slice views jump through the lesion centre (the field of view stays on the whole brain); the inserted
   lesion's outline (ground truth, not something the panel shows) is drawn as a cyan label-map outline. The
   three captures are composed side by side (1202 x 535) with the legend read back from the display node's
   `TopoReg.legend.*` attributes in the caption.
"""
from __future__ import annotations

import argparse
import os
import shutil
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


# --------------------------------------------------------------------------------------------
# 4. topology heatmap: the panel's workflow through the module's Qt-free logic
# --------------------------------------------------------------------------------------------
TOPOLOGY_OUT = ROOT / "Resources" / "Screenshots" / "TopoReg-Topology.png"
TOPO_VIEW_PX = 390
LESION = {"seed": 4, "radius": 7.0, "intensity": (0.1, 0.2), "rim": True, "mass_effect": 0.35}
TOPO_PARAMS = {"method": "optimize", "features": "intensity", "preset": "fast", "iterations": 30, "device": "cpu",
               "opacity": 0.5, "threshold": 0.25}   # opacity / threshold: the panel's defaults (slider 50 %)


def make_lesion_pair(workdir: Path) -> dict[str, Path]:
    """fixed = MNI152 T1 with an inserted lesion (+ mass effect), its warped brain mask and the lesion mask."""
    import numpy as np
    from toporeg.data import sample_path
    from toporeg.io import load_volume, save_volume
    from toporeg.io.volume import Volume
    from toporeg.topology.synthetic import insert_lesion
    from toporeg.transforms.sampling import warp

    import torch

    fixed = load_volume(sample_path("mni152_t1_2mm.nii.gz"))     # intensities already in [0, 1]
    brain = load_volume(sample_path("mni152_brainmask_2mm.nii.gz"), is_label=True)
    image, lesion, disp = insert_lesion(np.asarray(fixed.data, np.float32), np.asarray(brain.data) > 0,
                                        LESION["seed"], radius=LESION["radius"], intensity=LESION["intensity"],
                                        rim=LESION["rim"], mass_effect=LESION["mass_effect"])
    warped_brain = (warp(torch.as_tensor(np.asarray(brain.data, np.float32))[None, None], disp) > 0.5) | lesion
    affine = np.asarray(fixed.affine)
    lesion_np = lesion[0, 0].numpy()
    centre = np.argwhere(lesion_np).mean(0)
    log(f"lesion: {int(lesion_np.sum())} voxels, centre RAS {np.round(affine[:3, :3] @ centre + affine[:3, 3], 1)}")
    return {
        "fixed": Path(save_volume(Volume(image[0, 0].numpy().astype(np.float32), affine),
                                  workdir / "mni152_t1_lesion.nii.gz")),
        "fixed_mask": Path(save_volume(Volume(warped_brain[0, 0].numpy().astype(np.uint8), affine),
                                       workdir / "mni152_brainmask_lesion.nii.gz")),
        "lesion": Path(save_volume(Volume(lesion_np.astype(np.uint8), affine), workdir / "lesion_mask.nii.gz")),
    }


def run_topology_panel(paths: dict[str, Path], workdir: Path, reuse: bool) -> dict[str, Path]:
    """Views first (so their composite nodes exist), then the panel's TopologyLogic run, then the captures."""
    import numpy as np
    import slicer
    from toporeg.data import sample_path
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

    sys.path.insert(0, str(ROOT / "TopoReg"))
    from TopoRegLogic import nodes
    from TopoRegLogic import topology_display as overlay
    from TopoRegLogic.topology_logic import TopologyLogic, TopologyParameters

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    scene = app.scene
    slicer.mrmlScene = scene
    orientations = ("Axial", "Coronal", "Sagittal")
    colors = {"Axial": "#F34A33", "Coronal": "#6DAD4A", "Sagittal": "#EFD64D"}
    views = {}
    for ori in orientations:
        view = app.view_manager.create_view(ViewLayoutDefinition.slice_view(ori, label=f"topology_{ori}",
                                                                            color=colors[ori]))
        view.render_window().SetSize(TOPO_VIEW_PX, TOPO_VIEW_PX)
        view.update_size(TOPO_VIEW_PX, TOPO_VIEW_PX)
        view.set_background_color([0, 0, 0])
        views[ori] = view

    # what "Load data" gives a user: four volume nodes (masks as label maps) and the ground-truth lesion
    fixed = nodes.load_volume_node(scene, paths["fixed"], "MNI152 with lesion")
    moving = nodes.load_volume_node(scene, sample_path("colin27_t1_2mm.nii.gz"), "Colin27")
    fixed_mask = nodes.load_volume_node(scene, paths["fixed_mask"], "MNI152 brain mask", label=True)
    moving_mask = nodes.load_volume_node(scene, sample_path("colin27_brainmask_2mm.nii.gz"), "Colin27 brain mask",
                                         label=True)
    lesion = nodes.load_volume_node(scene, paths["lesion"], "inserted lesion (ground truth)", label=True)

    logic = TopologyLogic(scene, volumes_logic=app.volumes_logic, segmentations_logic=app.segmentations_logic,
                          temp_root=workdir / "tmp", keep_temp=True)
    params = TopologyParameters(fixedVolume=fixed, movingVolume=moving, fixedMask=fixed_mask,
                                movingMask=moving_mask, **TOPO_PARAMS)
    run_dir = workdir / "topology_run"
    if reuse and (run_dir / "out" / "report.json").exists():
        log(f"reusing {run_dir / 'out'}")
        status = logic.apply_results(params, run_dir / "out")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        seen = set()

        def progress(event):  # one line per stage and tenth of the run
            key = (event.stage, int(10 * event.fraction))
            if key not in seen:
                seen.add(key)
                log(f"  {100 * event.fraction:3.0f} % {event.stage}: {event.message}")

        runner = logic.start_background(params, progress, work_dir=run_dir)
        log(runner.log[0])
        state = runner.wait(timeout=1800, interval=0.5)
        status = logic.last.get("status", "")
        if state != "succeeded":
            raise SystemExit(f"topology run {state}: {status}\n{logic.last.get('log', '')}")
        log(f"topology run {time.perf_counter() - t0:.1f} s")
    log(f"status: {status}")
    heatmap, display = logic.last["heatmap"], logic.last["display"]

    # display nodes as the panel leaves them (fixed: Slicer's automatic window/level; maps: TopologyLogic's style)
    fd, dd = fixed.GetDisplayNode(), display.GetDisplayNode()
    log(f"display nodes: fixed window/level {fd.GetWindow():.3g}/{fd.GetLevel():.3g} (auto {fd.GetAutoWindowLevel()}), "
        f"interpolate fixed {fd.GetInterpolate()} / display map {dd.GetInterpolate()}, "
        f"colour node '{dd.GetColorNode().GetName()}'")
    outline = _outline_color_node(scene)
    lesion.GetDisplayNode().SetAndObserveColorNodeID(outline.GetID())

    lesion_np = nodes.volume_from_node(lesion).data > 0
    affine = nodes.ijk_to_ras(fixed)
    centre = affine[:3, :3] @ np.argwhere(np.asarray(lesion_np)).mean(0) + affine[:3, 3]
    captures = {}
    for ori, view in views.items():
        composite = view._logic.GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == fixed.GetID()       # set by TopologyLogic.apply_results
        assert composite.GetForegroundVolumeID() == display.GetID()
        composite.SetLabelVolumeID(lesion.GetID())
        composite.SetLabelOpacity(1.0)
        slice_node = view._logic.GetSliceNode()
        slice_node.SetUseLabelOutline(True)
        view.fit_view_to_content()
        slice_node.JumpSliceByOffsetting(*centre)
        captures[ori] = workdir / f"topology_{ori}.png"
        capture(view, captures[ori])

    heat = nodes.volume_from_node(heatmap).data
    disp_map = nodes.volume_from_node(display).data
    brain = nodes.volume_from_node(fixed_mask).data > 0
    in_lesion, elsewhere = disp_map[lesion_np], disp_map[brain & ~lesion_np]
    stats = {"lesion_mean": float(in_lesion.mean()), "elsewhere_mean": float(elsewhere.mean()),
             "elsewhere_above": float((elsewhere >= TOPO_PARAMS["threshold"]).mean()),
             "elsewhere_above_05": float((elsewhere >= 0.5).mean()),
             "lesion_above_05": float((in_lesion >= 0.5).mean()),
             "finite": bool(np.isfinite(heat).all())}
    log("display map: lesion mean {lesion_mean:.2f} ({lesion_above_05:.0%} >= 0.5); rest of the brain mean "
        "{elsewhere_mean:.2f}, {elsewhere_above:.1%} >= threshold, {elsewhere_above_05:.1%} >= 0.5; heatmap finite "
        "{finite}".format(**stats))
    if not stats["finite"]:
        raise SystemExit("the heatmap has non-finite values")
    legend = overlay.legend_from_node(display)
    legend_line = ", ".join(f"{k} = {v}" for k, v in sorted(legend.items(), key=lambda kv: float(kv[0])))
    # (when `app` goes out of scope, the label-outline pipelines print a few harmless "Component 3 is not in input")
    return {"captures": captures, "status": status, "legend": legend_line,
            "units": display.GetAttribute("TopoReg.Units"), "colors": display.GetDisplayNode().GetColorNode(),
            "centre": centre, "stats": stats}


def _outline_color_node(scene):
    """A one-label colour table: label 1 (the inserted lesion) in cyan."""
    from slicer import vtkMRMLColorTableNode

    node = vtkMRMLColorTableNode()
    node.SetName("TopoRegLesionOutline")
    node.SetTypeToUser()
    node.SetNumberOfColors(2)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    node.SetColor(1, "lesion", 0.0, 1.0, 1.0, 1.0)
    scene.AddNode(node)
    return node


def topology_montage(result: dict, out: Path) -> None:
    from PIL import Image, ImageDraw

    pad, title_h, line_h = 8, 26, 19
    W = 3 * TOPO_VIEW_PX + 4 * pad
    H = title_h + TOPO_VIEW_PX + 2 * pad + 5 * line_h + pad
    canvas = Image.new("RGB", (W, H), (24, 24, 26))
    draw = ImageDraw.Draw(canvas)
    f_title, f_small = _font(16), _font(13)
    r, a, s = result["centre"]
    draw.text((pad, pad), "Topology heatmap: ICBM152 T1 with an inserted lesion (fixed) vs Colin27 T1 (moving), "
              f"slices through the lesion centre ({r:.0f}, {a:.0f}, {s:.0f}) mm RAS",
              fill=(235, 235, 235), font=f_title)
    y = pad + title_h
    for i, (ori, path) in enumerate(result["captures"].items()):
        x = pad + i * (TOPO_VIEW_PX + pad)
        canvas.paste(Image.open(path).convert("RGB").resize((TOPO_VIEW_PX, TOPO_VIEW_PX)), (x, y))
        draw.text((x + 8, y + 6), ori.lower(), fill=(255, 255, 255), font=f_small)
    y += TOPO_VIEW_PX + pad
    bar_x, bar_w = pad + 14, 240
    _color_bar_from_node(canvas, draw, result["colors"], bar_x, y + 3, bar_w, 12, f_small)
    lines = [
        (bar_x + bar_w + 24, f"display map of the heatmap (window 0-1, the panel's colour table, 50 % opacity, values "
                             f"< {TOPO_PARAMS['threshold']:g} transparent)", (220, 220, 220)),
        (pad, f"legend ({result['units']}, from the node attributes): {result['legend']} per voxel",
         (220, 220, 220)),
        (pad, result["status"].split(";")[0] + " (the panel's status line)", (220, 220, 220)),
        (pad, "cyan outline: the inserted lesion (ground truth from insert_lesion, added for this figure; "
              "not drawn by the panel)", (120, 230, 230)),
        (pad, "TopoReg topology panel: optimize, intensity features, fast preset, 30 iterations, CPU  ·  real "
              "Slicer slice views (slicer-core + trame-slicer, offscreen)", (160, 160, 160)),
    ]
    for x, text, colour in lines:
        draw.text((x, y), text, fill=colour, font=f_small)
        y += line_h
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


def _color_bar_from_node(canvas, draw, color_node, x, y, w, h, font) -> None:
    """The display node's own colour node sampled over the display window [0, 1]."""
    import numpy as np
    from PIL import Image

    lut = color_node.GetScalarsToColors()
    lo, hi = lut.GetRange()
    rgb = (np.array([lut.GetColor(lo + (hi - lo) * t) for t in np.linspace(0, 1, w)]) * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(rgb[None], h, axis=0)), (x, y))
    draw.text((x - 12, y - 2), "0", fill=(220, 220, 220), font=font)
    draw.text((x + w + 5, y - 2), "1", fill=(220, 220, 220), font=font)


def make_topology(workdir: Path, out: Path, reuse: bool) -> None:
    names = {"fixed": "mni152_t1_lesion.nii.gz", "fixed_mask": "mni152_brainmask_lesion.nii.gz",
             "lesion": "lesion_mask.nii.gz"}
    paths = {k: workdir / v for k, v in names.items()}
    if not (reuse and all(p.exists() for p in paths.values())):
        paths = make_lesion_pair(workdir)
    t0 = time.perf_counter()
    result = run_topology_panel(paths, workdir, reuse)
    log(f"topology panel + 3 views in {time.perf_counter() - t0:.1f} s")
    topology_montage(result, out)
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["registration", "topology"], default=None, help="make one screenshot only")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="registration screenshot")
    p.add_argument("--topology-out", type=Path, default=TOPOLOGY_OUT, help="topology screenshot")
    p.add_argument("--workdir", type=Path, default=None, help="keep intermediate files here")
    p.add_argument("--reuse", action="store_true", help="reuse registration / topology outputs found in --workdir")
    args = p.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="toporeg-shots-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)

    if args.only in (None, "registration"):
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
    if args.only in (None, "topology"):
        make_topology(workdir, args.topology_out, args.reuse)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
