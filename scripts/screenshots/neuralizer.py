"""Resources/Screenshots/TopoReg-Neuralizer.png: what a user of the Neuralizer panel sees.

1. The bundled ICBM152 2 mm T1 (target) and one context pair, the bundled Colin27 2 mm T1 with its AAL label map, are
   loaded as volume nodes (the label map as a label map node) through Slicer's storage node; three slice views for
   the target and one for the context are created.
2. The module's own Qt-free logic runs the panel's workflow: `NeuralizerLogic.start_background(NeuralizerParameters(
   ...))` = the CLI `toporeg neuralize MNI152 --context COLIN27_T1 COLIN27_AAL --task segment --label-value 77
   --plane axial --model MODEL --device cpu` in a child process (contexts aligned affinely to the target and the one
   pair bootstrapped to the card's context size: the panel's defaults), then `apply_results`: a segmentation node
   with one segment named after the context set ("Thalamus_L"), the target as background of every slice view.
   MODEL: the bundled `neuralizer_2d`, or `make_screenshots.py --neuralizer-model FILE.safetensors` (card beside it).
3. The label: AAL 77, the left thalamus: deep grey matter with a clear T1 contrast against the white matter and the
   ventricle, compact (~9 mL) and seen in all three planes at 2 mm, so a reader can judge the result by eye, and one
   side only, so that a left/right confusion shows. (The hippocampi are small and thin at 2 mm, the precentral gyri a
   cortical ribbon that is hard to judge on a template.) One structure, one run: the figure costs one CLI run.
4. Figure: left, the context view (Colin27, coronal, through its thalamus, label 77 outlined in the segment's colour);
   right, the target views through where the CLI's own alignment carries the context label, with the segment's
   outline (fill off for the figure, shown in the target views only). Logged checks (no MNI152 AAL among the sample
   data, so no Dice against truth): the result's volume and centroid vs the context structure's, and its overlap with
   the carried-over label (a copy-the-label baseline, not ground truth). Caveat, stated in the caption: the model card
   says it was trained on the ICBM152 template (with atlas labels) only, so the target is "new" to the context pair,
   not to the model; Colin27 (the context) is the held-out subject.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import figure, views
from .common import MODELS, SCREENSHOTS, centroid_ras, log, model_card, run_panel, use_module_logic

OUT = SCREENSHOTS / "TopoReg-Neuralizer.png"
MODEL = "neuralizer_2d"               # the bundled model; --neuralizer-model overrides
VIEW_PX = 330
FILES = {"target": "mni152_t1_2mm.nii.gz", "image": "colin27_t1_2mm.nii.gz", "labels": "colin27_aal_2mm.nii.gz"}
LABEL, LABEL_NAME = 77, "Thalamus_L"
CONTEXT_VIEW = "Coronal"
PARAMS = {"task": "segment", "labelValue": LABEL, "contextSetName": LABEL_NAME, "device": "cpu"}


def make(workdir: Path, out: Path = OUT, reuse: bool = False, model: str = MODEL) -> None:
    if not model.endswith(".safetensors") and not (MODELS / f"{model}.safetensors").exists():
        raise SystemExit(f"no bundled {model} in {MODELS}: give --neuralizer-model FILE.safetensors")
    t0 = time.perf_counter()
    result = run_neuralizer_panel(workdir, reuse, model)
    log(f"Neuralizer panel + 4 views in {time.perf_counter() - t0:.1f} s")
    montage(result, out)
    log(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def run_neuralizer_panel(workdir: Path, reuse: bool, model: str) -> dict:
    """Views first (so their composite nodes exist), then the panel's NeuralizerLogic run, then the captures."""
    import numpy as np
    from toporeg.data import sample_path
    from toporeg.geometry.resample import resample_to

    use_module_logic()
    from TopoRegLogic import nodes
    from TopoRegLogic.neuralizer_logic import NeuralizerLogic, NeuralizerParameters

    app = views.slicer_app(module_scene=True)
    scene = app.scene
    slice_views = views.add_slice_views(app, "neuralizer", VIEW_PX)
    context_view = views.add_slice_view(app, CONTEXT_VIEW, "neuralizer_context", VIEW_PX)
    target = nodes.load_volume_node(scene, sample_path(FILES["target"]), "MNI152 T1")
    image = nodes.load_volume_node(scene, sample_path(FILES["image"]), "Colin27 T1")
    labels = nodes.load_volume_node(scene, sample_path(FILES["labels"]), "Colin27 AAL", label=True)

    logic = NeuralizerLogic(scene, temp_root=workdir / "tmp", keep_temp=True)
    params = NeuralizerParameters(targetVolume=target, contextPairs=((image, labels),), model=model, **PARAMS)
    status = run_panel(logic, params, workdir / "neuralizer_run", reuse, "Neuralizer")
    log(f"status: {status}")
    seg, report = logic.last["output"], logic.last["report"]
    card = model_card(report, model)
    segment = seg.GetSegmentation().GetNthSegment(0)
    rgb = segment.GetColor()

    # the context structure, and where the CLI's own alignment puts it on the target (the views' centre)
    target_grid = nodes.volume_from_node(target)
    aal = nodes.volume_from_node(labels, is_label=True)
    structure = aal.with_data((np.asarray(aal.data) == LABEL).astype(np.uint8), is_label=True)
    context = report["contexts"][0]
    carried = np.asarray(resample_to(structure, target_grid, transform=np.asarray(context["affine_ras"])).data) > 0
    result = np.asarray(nodes.mask_from_node(seg, target, app.segmentations_logic).data) > 0
    stats = _checks(result, target_grid.affine, np.asarray(structure.data) > 0, structure.affine, carried)

    display = seg.GetDisplayNode()                  # outline only, as the context's, in the target views only
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    for view in slice_views.values():
        display.AddViewNodeID(view._logic.GetSliceNode().GetID())
    outline = views.label_color_node(scene, "TopoRegContextOutline", LABEL_NAME, rgb, value=LABEL,
                                     size=int(np.asarray(aal.data).max()) + 1)
    labels.GetDisplayNode().SetAndObserveColorNodeID(outline.GetID())
    composite = context_view._logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(image.GetID())  # apply_results put the target in every view
    composite.SetLabelVolumeID(labels.GetID())
    composite.SetLabelOpacity(1.0)
    context_view._logic.GetSliceNode().SetUseLabelOutline(True)

    captures = {}
    for ori, view, centre in [*[(o, v, stats["expected"]) for o, v in slice_views.items()],
                              ("context", context_view, stats["context"])]:
        assert ori == "context" or view._logic.GetSliceCompositeNode().GetBackgroundVolumeID() == target.GetID()
        view.fit_view_to_content()
        view._logic.GetSliceNode().JumpSliceByOffsetting(*centre)
        captures[ori] = views.capture(view, workdir / f"neuralizer_{ori}.png")
    return {"captures": captures, "status": status, "report": report, "card": card, "stats": stats,
            "segment": (segment.GetName(), rgb),
            "model": f"file {Path(model).name}" if model.endswith(".safetensors") else f"bundled {model}"}


def _checks(result, affine, structure, structure_affine, carried) -> dict:
    """Size and place of the result vs the context structure and vs that structure carried over by the alignment."""
    import numpy as np

    def ml(mask, a):
        return float(mask.sum() * abs(np.linalg.det(np.asarray(a)[:3, :3])) / 1000)

    stats = {"ml": ml(result, affine), "context_ml": ml(structure, structure_affine),
             "context": centroid_ras(structure, structure_affine), "expected": centroid_ras(carried, affine),
             "dice": float(2 * (result & carried).sum() / max(result.sum() + carried.sum(), 1))}
    stats["centroid"] = centroid_ras(result, affine) if result.any() else np.full(3, np.nan)
    stats["offset"] = float(np.linalg.norm(stats["centroid"] - stats["expected"]))
    log("result {ml:.1f} mL vs the context {context_ml:.1f} mL; centroid RAS {c} mm vs the context structure's {k} "
        "(carried over by the alignment: {e}), {offset:.1f} mm apart; Dice with the carried-over label {dice:.2f} "
        "(a copy-the-label baseline, not ground truth)".format(
            c=np.round(stats["centroid"], 1), k=np.round(stats["context"], 1), e=np.round(stats["expected"], 1),
            **stats))
    return stats


def montage(result: dict, out: Path) -> None:
    pad, gap, title_h, head_h, line_h = 8, 30, 26, 20, 19
    W = 4 * VIEW_PX + 3 * pad + gap + 2 * pad
    H = title_h + head_h + VIEW_PX + 2 * pad + 4 * line_h + pad
    image, draw = figure.canvas(W, H)
    f_title, f_small = figure.font(16), figure.font(13)
    name, rgb = result["segment"]
    colour = tuple(int(255 * c) for c in rgb)
    report, card, stats = result["report"], result["card"], result["stats"]
    draw.text((pad, pad), f"Neuralizer: few-shot segmentation of the left thalamus (AAL {LABEL}) on the ICBM152 T1, "
              "taught by one Colin27 example", fill=(235, 235, 235), font=f_title)
    y = pad + title_h
    right = pad + VIEW_PX + gap
    draw.text((pad, y), "taught by this example: Colin27 T1 + AAL", fill=figure.TEXT, font=f_small)
    draw.text((right, y), f"result on another brain: the ICBM152 T1 (target) + the panel's segment '{name}' "
              "(outline; fill off for this figure)", fill=figure.TEXT, font=f_small)
    y += head_h
    figure.paste_views(image, draw, {CONTEXT_VIEW: result["captures"]["context"]}, pad, y, VIEW_PX, pad, f_small)
    figure.paste_views(image, draw, {k: v for k, v in result["captures"].items() if k != "context"}, right, y,
                       VIEW_PX, pad, f_small)
    mid = y + VIEW_PX // 2
    draw.polygon([(pad + VIEW_PX + 6, mid - 9), (right - 6, mid), (pad + VIEW_PX + 6, mid + 9)], fill=colour)
    y += VIEW_PX + pad
    context = report["contexts"][0]
    subjects = card.get("training", {}).get("data", {}).get("subjects", {}).get("training", [])
    steps, converged = card.get("training", {}).get("iterations", "?"), card.get("convergence", {}).get("converged")
    figure.text_lines(draw, [
        (pad, f"{result['status'].split('; ')[0]} (the panel's status line)", figure.TEXT),
        (pad, f"context: label {LABEL} outlined in the segment's colour ({stats['context_ml']:.1f} mL); 1 pair, "
              f"bootstrapped to {report['context_size']}, aligned affinely to the target (r = "
              f"{context['correlation']:.2f}); views through where that alignment puts it", colour),
        (pad, f"result {stats['ml']:.1f} mL, centroid {stats['offset']:.1f} mm from the carried-over context label, "
              f"Dice {stats['dice']:.2f} with it (a copy-the-label baseline, not ground truth)", figure.TEXT),
        (pad, f"TopoReg Neuralizer panel: {result['model']} ({card.get('n_parameters', 0) / 1e3:.0f} k parameters, "
              f"{steps} CPU steps, {'converged' if converged else 'not converged'}; trained on "
              f"{', '.join(subjects) or '?'} only, Colin27 held out), {report['plane']} slices, CPU, "
              f"{report['timings']['total_seconds']:.0f} s  ·  real Slicer slice views (offscreen)",
         (160, 160, 160)),
    ], y, line_h, f_small)
    figure.save(image, out)
