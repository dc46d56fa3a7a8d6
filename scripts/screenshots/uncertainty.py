"""Resources/Screenshots/TopoReg-Uncertainty.png: what a user of the uncertainty panel sees.

1. The bundled Colin27 2 mm T1 (a real whole head, held out of the segmentation models' training) is loaded as a
   volume node through Slicer's storage node; three offscreen slice views are created.
2. The module's own Qt-free logic runs the panel's workflow: `UncertaintyLogic.start_background(
   UncertaintyParameters(...))` = the CLI `toporeg segment INPUT --model METHOD --task tissue --samples 16
   --save-samples 16 --device cpu` in a child process (METHOD: `mcdropout` when the bundled `seg_tissue_mcdropout`
   exists, else `unet`, i.e. `seg_tissue_unet`), then `apply_results`: a segmentation node (CSF / grey / white
   matter with SNOMED-CT terminology), the entropy map (bits) as the foreground of every slice view (the panel's
   colour table, window 0..log2(4) = 2 bits, < 0.1 bit transparent, 50 % opacity), legend as node attributes.
3. For the figure the segmentation is drawn as outlines only (fill off) so the entropy stays visible; views at the
   usual MNI positions. Logged checks: entropy on label boundaries vs inside the tissue classes, and the brain
   (CSF + GM + WM) against Colin27's brain mask.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import figure, views
from .common import MODELS, SCREENSHOTS, legend_line, log, model_card, run_panel, use_module_logic

OUT = SCREENSHOTS / "TopoReg-Uncertainty.png"
VIEW_PX = 390
INPUT = "colin27_t1_2mm.nii.gz"
TASK = "tissue"
METHODS = ("mcdropout", "unet")     # the first bundled seg_tissue_{method}: MC-dropout samples differ, the U-Net's not
PARAMS = {"task": TASK, "samples": 16, "device": "cpu"}   # opacity 0.5 / threshold 0.1 bit: the panel's defaults


def bundled_method() -> str:
    for method in METHODS:
        if (MODELS / f"seg_{TASK}_{method}.safetensors").exists():
            return method
    raise SystemExit(f"no bundled seg_{TASK}_{{{','.join(METHODS)}}} model in Resources/Models")


def make(workdir: Path, out: Path = OUT, reuse: bool = False) -> None:
    t0 = time.perf_counter()
    result = run_uncertainty_panel(workdir, reuse)
    log(f"uncertainty panel + 3 views in {time.perf_counter() - t0:.1f} s")
    montage(result, out)
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def run_uncertainty_panel(workdir: Path, reuse: bool) -> dict:
    """Views first (so their composite nodes exist), then the panel's UncertaintyLogic run, then the captures."""
    import json

    from toporeg.data import sample_path

    use_module_logic()
    from TopoRegLogic import nodes
    from TopoRegLogic import topology_display as overlay
    from TopoRegLogic.uncertainty_logic import UncertaintyLogic, UncertaintyParameters

    app = views.slicer_app(module_scene=True)
    scene = app.scene
    slice_views = views.add_slice_views(app, "uncertainty", VIEW_PX)
    source = nodes.load_volume_node(scene, sample_path(INPUT), "Colin27 T1")

    method = bundled_method()
    logic = UncertaintyLogic(scene, temp_root=workdir / "tmp", keep_temp=True)
    params = UncertaintyParameters(inputVolume=source, model=method, **PARAMS)
    run_dir = workdir / f"uncertainty_run_{method}"
    status = run_panel(logic, params, run_dir, reuse, "segmentation")
    log(f"status: {status}")
    seg, entropy = logic.last["segmentation"], logic.last["entropy"]
    report = json.loads((run_dir / "out" / "report.json").read_text(encoding="utf-8"))
    model = report["model"]
    card = model_card(report, f"seg_{TASK}_{method}")

    display = seg.GetDisplayNode()                      # outlines only, for the figure
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    captures = {}
    for ori, view in slice_views.items():
        composite = view._logic.GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == source.GetID()      # set by UncertaintyLogic.apply_results
        assert composite.GetForegroundVolumeID() == entropy.GetID()
        views.show_standard_slice(view, ori)
        captures[ori] = views.capture(view, workdir / f"uncertainty_{ori}.png")

    stats = _checks(nodes.volume_from_node(entropy).data, run_dir / "out" / report["files"]["labels"],
                    sample_path("colin27_brainmask_2mm.nii.gz"), params.threshold)
    segmentation = seg.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    legend = overlay.legend_from_node(entropy)
    return {"captures": captures, "status": status, "method": method, "model": model["name"], "card": card,
            "legend": legend_line(entropy),
            "top": legend[max(legend, key=float)],
            "colors": entropy.GetDisplayNode().GetColorNode(), "threshold": params.threshold,
            "opacity": params.opacity, "segments": [(s.GetName(), s.GetColor()) for s in segments], "stats": stats}


def _checks(entropy, labels_path: Path, brain_mask_path: Path, threshold: float) -> dict:
    """Is the uncertainty where it should be (label boundaries), is the segmentation on the anatomy (brain mask)?"""
    import numpy as np
    from toporeg.io import load_volume

    labels = np.asarray(load_volume(labels_path, is_label=True).data)
    mask = np.asarray(load_volume(brain_mask_path, is_label=True).data) > 0
    boundary = np.zeros(labels.shape, bool)                 # a 6-neighbour has another label
    for axis in range(3):
        step = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(lo)] |= step
        boundary[tuple(hi)] |= step
    tissue = labels > 0
    uncertain = entropy >= threshold
    stats = {"boundary": float(entropy[boundary].mean()), "interior": float(entropy[tissue & ~boundary].mean()),
             "uncertain_on_boundary": float(boundary[uncertain].mean()) if uncertain.any() else 0.0,
             "mask_covered": float((tissue & mask).sum() / mask.sum()),
             "tissue_in_mask": float((tissue & mask).sum() / tissue.sum()),
             "in_mask": float(entropy[tissue & mask].mean()), "off_mask": float(entropy[tissue & ~mask].mean())}
    log("entropy: {boundary:.2f} bits on label boundaries vs {interior:.2f} inside the tissue classes; "
        "{uncertain_on_boundary:.0%} of the voxels above the threshold are boundary voxels".format(**stats))
    log("brain (CSF+GM+WM) vs Colin27's brain mask: covers {mask_covered:.1%} of the mask, {tissue_in_mask:.1%} of it "
        "inside the mask; mean entropy {in_mask:.2f} bits inside the mask, {off_mask:.2f} outside".format(**stats))
    return stats


def montage(result: dict, out: Path) -> None:
    pad, title_h, line_h = 8, 26, 19
    W = 3 * VIEW_PX + 4 * pad
    H = title_h + VIEW_PX + 2 * pad + 5 * line_h + pad
    image, draw = figure.canvas(W, H)
    f_title, f_small = figure.font(16), figure.font(13)
    card = result["card"]
    trained = card.get("training", {})
    unseen = " (held out of the model's training)" if trained.get("hold_out") == "colin27" else ""
    draw.text((pad, pad), f"Uncertainty: tissue segmentation of the Colin27 whole-head T1{unseen}, entropy overlay "
              "and segment outlines", fill=(235, 235, 235), font=f_title)
    y = pad + title_h
    figure.paste_views(image, draw, result["captures"], pad, y, VIEW_PX, pad, f_small)
    y += VIEW_PX + pad
    bar_x, bar_w = pad + 14, 240
    lut = result["colors"].GetScalarsToColors()
    figure.color_bar(image, draw, lut, *lut.GetRange(), bar_x, y + 3, bar_w, 12, f_small, ("0", result["top"]))
    status, _, volumes = result["status"].partition("; ")
    converged = "converged" if card.get("convergence", {}).get("converged") else "not converged"
    lines = [
        (bar_x + bar_w + 70, f"entropy of the mean class probabilities (the panel's colour table, window 0–"
                             f"{result['top']}, {result['opacity']:.0%} opacity, < {result['threshold']:g} bit "
                             "transparent)", figure.TEXT),
        (pad, f"legend (from the node attributes): {result['legend']} per voxel", figure.TEXT),
        (pad, f"{status} (the panel's status line)", figure.TEXT),
    ]
    y = figure.text_lines(draw, lines, y, line_h, f_small)
    x = pad
    draw.text((x, y), "segment outlines (fill off for this figure):", fill=figure.TEXT, font=f_small)
    x += int(draw.textlength("segment outlines (fill off for this figure):", font=f_small)) + 10
    for name, rgb in result["segments"]:
        draw.rectangle([x, y + 3, x + 11, y + 14], fill=tuple(int(255 * c) for c in rgb))
        draw.text((x + 16, y), name, fill=figure.TEXT, font=f_small)
        x += 16 + int(draw.textlength(name, font=f_small)) + 14
    draw.text((x + 6, y), f"({volumes})" if volumes else "", fill=figure.TEXT, font=f_small)
    y += line_h
    figure.text_lines(draw, [
        (pad, f"TopoReg uncertainty panel: {result['method']} = bundled {result['model']} "
              f"({trained.get('iterations', '?')} steps on a CPU, {converged}), {TASK}, {PARAMS['samples']} samples, "
              "CPU  ·  real Slicer slice views (slicer-core, offscreen)", (160, 160, 160)),
    ], y, line_h, f_small)
    figure.save(image, out)
