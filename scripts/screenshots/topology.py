"""Resources/Screenshots/TopoReg-Topology.png: what a user of the topology panel sees.

1. fixed = the bundled ICBM152 2 mm T1 with a synthetic lesion inserted by `toporeg.topology.synthetic.insert_lesion`
   (seed 4: radius 7 voxels, dark core with a bright rim, mass effect 0.35; the brain mask is warped by the same
   mass-effect field), moving = the bundled Colin27 2 mm T1, both with their brain masks. The lesioned image and the
   lesion mask are written as NIfTI and loaded as volume nodes.
2. Three offscreen slice views, then the module's own Qt-free logic runs the panel's workflow:
   `TopologyLogic.start_background(TopologyParameters(...))` = the CLI `toporeg topology FIXED MOVING --method
   optimize --features intensity --preset fast --iterations 30 --device cpu --fixed-mask ... --moving-mask ...` in a
   child process, then `apply_results`: heatmap / display-map nodes on the fixed grid, the panel's colour table
   (`topology_display.color_node`: Slicer's "Inferno" on the desktop, its procedural copy "TopoReg Inferno" here),
   window 0-1, threshold 0.25 and 50 % opacity in every slice composite node, legend as node attributes. Display
   nodes are left as the panel leaves them. Deterministic: fixed lesion seed, the CLI's own fixed seeds, CPU.
3. The views jump through the lesion centre (the field of view stays on the whole brain); the inserted lesion's
   outline (ground truth, not something the panel shows) is a cyan label-map outline. The legend is read back from
   the display node's `TopoReg.legend.*` attributes.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import figure, views
from .common import SCREENSHOTS, centroid_ras, legend_line, log, run_panel, use_module_logic

OUT = SCREENSHOTS / "TopoReg-Topology.png"
VIEW_PX = 390
LESION = {"seed": 4, "radius": 7.0, "intensity": (0.1, 0.2), "rim": True, "mass_effect": 0.35}
PARAMS = {"method": "optimize", "features": "intensity", "preset": "fast", "iterations": 30, "device": "cpu",
          "opacity": 0.5, "threshold": 0.25}   # opacity / threshold: the panel's defaults (slider 50 %)
FILES = {"fixed": "mni152_t1_lesion.nii.gz", "fixed_mask": "mni152_brainmask_lesion.nii.gz",
         "lesion": "lesion_mask.nii.gz"}


def make(workdir: Path, out: Path = OUT, reuse: bool = False) -> None:
    paths = {k: workdir / v for k, v in FILES.items()}
    if not (reuse and all(p.exists() for p in paths.values())):
        paths = make_lesion_pair(workdir)
    t0 = time.perf_counter()
    result = run_topology_panel(paths, workdir, reuse)
    log(f"topology panel + 3 views in {time.perf_counter() - t0:.1f} s")
    montage(result, out)
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def make_lesion_pair(workdir: Path) -> dict[str, Path]:
    """fixed = MNI152 T1 with an inserted lesion (+ mass effect), its warped brain mask and the lesion mask."""
    import numpy as np
    import torch
    from toporeg.data import sample_path
    from toporeg.io import load_volume, save_volume
    from toporeg.io.volume import Volume
    from toporeg.topology.synthetic import insert_lesion
    from toporeg.transforms.sampling import warp

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
    arrays = {"fixed": image[0, 0].numpy().astype(np.float32),
              "fixed_mask": warped_brain[0, 0].numpy().astype(np.uint8), "lesion": lesion_np.astype(np.uint8)}
    return {k: Path(save_volume(Volume(arrays[k], affine), workdir / name)) for k, name in FILES.items()}


def run_topology_panel(paths: dict[str, Path], workdir: Path, reuse: bool) -> dict:
    """Views first (so their composite nodes exist), then the panel's TopologyLogic run, then the captures."""
    import numpy as np
    from toporeg.data import sample_path

    use_module_logic()
    from TopoRegLogic import nodes
    from TopoRegLogic.topology_logic import TopologyLogic, TopologyParameters

    app = views.slicer_app(module_scene=True)
    scene = app.scene
    slice_views = views.add_slice_views(app, "topology", VIEW_PX)

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
                                movingMask=moving_mask, **PARAMS)
    status = run_panel(logic, params, workdir / "topology_run", reuse, "topology")
    log(f"status: {status}")
    heatmap, display = logic.last["heatmap"], logic.last["display"]

    # display nodes as the panel leaves them (fixed: Slicer's automatic window/level; maps: TopologyLogic's style)
    fd, dd = fixed.GetDisplayNode(), display.GetDisplayNode()
    log(f"display nodes: fixed window/level {fd.GetWindow():.3g}/{fd.GetLevel():.3g} (auto {fd.GetAutoWindowLevel()}), "
        f"interpolate fixed {fd.GetInterpolate()} / display map {dd.GetInterpolate()}, "
        f"colour node '{dd.GetColorNode().GetName()}'")
    outline = views.label_color_node(scene, "TopoRegLesionOutline", "lesion", (0.0, 1.0, 1.0))
    lesion.GetDisplayNode().SetAndObserveColorNodeID(outline.GetID())

    lesion_np = nodes.volume_from_node(lesion).data > 0
    centre = centroid_ras(lesion_np, nodes.ijk_to_ras(fixed))
    captures = {}
    for ori, view in slice_views.items():
        composite = view._logic.GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == fixed.GetID()       # set by TopologyLogic.apply_results
        assert composite.GetForegroundVolumeID() == display.GetID()
        composite.SetLabelVolumeID(lesion.GetID())
        composite.SetLabelOpacity(1.0)
        slice_node = view._logic.GetSliceNode()
        slice_node.SetUseLabelOutline(True)
        view.fit_view_to_content()
        slice_node.JumpSliceByOffsetting(*centre)
        captures[ori] = views.capture(view, workdir / f"topology_{ori}.png")

    heat = nodes.volume_from_node(heatmap).data
    disp_map = nodes.volume_from_node(display).data
    brain = nodes.volume_from_node(fixed_mask).data > 0
    in_lesion, elsewhere = disp_map[lesion_np], disp_map[brain & ~lesion_np]
    stats = {"lesion_mean": float(in_lesion.mean()), "elsewhere_mean": float(elsewhere.mean()),
             "elsewhere_above": float((elsewhere >= PARAMS["threshold"]).mean()),
             "elsewhere_above_05": float((elsewhere >= 0.5).mean()),
             "lesion_above_05": float((in_lesion >= 0.5).mean()),
             "finite": bool(np.isfinite(heat).all())}
    log("display map: lesion mean {lesion_mean:.2f} ({lesion_above_05:.0%} >= 0.5); rest of the brain mean "
        "{elsewhere_mean:.2f}, {elsewhere_above:.1%} >= threshold, {elsewhere_above_05:.1%} >= 0.5; heatmap finite "
        "{finite}".format(**stats))
    if not stats["finite"]:
        raise SystemExit("the heatmap has non-finite values")
    return {"captures": captures, "status": status, "legend": legend_line(display),
            "units": display.GetAttribute("TopoReg.Units"), "colors": display.GetDisplayNode().GetColorNode(),
            "centre": centre, "stats": stats}


def montage(result: dict, out: Path) -> None:
    pad, title_h, line_h = 8, 26, 19
    W = 3 * VIEW_PX + 4 * pad
    H = title_h + VIEW_PX + 2 * pad + 5 * line_h + pad
    image, draw = figure.canvas(W, H)
    f_title, f_small = figure.font(16), figure.font(13)
    r, a, s = result["centre"]
    draw.text((pad, pad), "Topology heatmap: ICBM152 T1 with an inserted lesion (fixed) vs Colin27 T1 (moving), "
              f"slices through the lesion centre ({r:.0f}, {a:.0f}, {s:.0f}) mm RAS",
              fill=(235, 235, 235), font=f_title)
    y = pad + title_h
    figure.paste_views(image, draw, result["captures"], pad, y, VIEW_PX, pad, f_small)
    y += VIEW_PX + pad
    bar_x, bar_w = pad + 14, 240
    lut = result["colors"].GetScalarsToColors()
    figure.color_bar(image, draw, lut, *lut.GetRange(), bar_x, y + 3, bar_w, 12, f_small, ("0", "1"))
    figure.text_lines(draw, [
        (bar_x + bar_w + 24, f"display map of the heatmap (window 0-1, the panel's colour table, 50 % opacity, values "
                             f"< {PARAMS['threshold']:g} transparent)", figure.TEXT),
        (pad, f"legend ({result['units']}, from the node attributes): {result['legend']} per voxel", figure.TEXT),
        (pad, result["status"].split(";")[0] + " (the panel's status line)", figure.TEXT),
        (pad, "cyan outline: the inserted lesion (ground truth from insert_lesion, added for this figure; "
              "not drawn by the panel)", (120, 230, 230)),
        (pad, "TopoReg topology panel: optimize, intensity features, fast preset, 30 iterations, CPU  ·  real "
              "Slicer slice views (slicer-core + trame-slicer, offscreen)", (160, 160, 160)),
    ], y, line_h, f_small)
    figure.save(image, out)
