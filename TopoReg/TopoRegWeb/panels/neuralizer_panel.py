"""Neuralizer panel: the context picker (choose an image and its label map, segmentation or output volume, "Add
pair"; remove pairs), task, label value, plane, model, alignment -> `NeuralizerParameters` -> the module's
`NeuralizerLogic` (`toporeg neuralize` on the target, in the background). Each pair is checked by the logic's own
`check_pair` when it is added, as in the Slicer panel, so a wrong pair is refused at once with one line.

State: `nz_target`, `nz_image`, `nz_output`, `nz_pairs` ([{image, output, title}]), `nz_task`, `nz_label_value`
(0: any non-zero label), `nz_plane`, `nz_model`, `nz_models`, `nz_context_size` (0: the model card's), `nz_align`,
`nz_status`.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from TopoRegLogic.neuralizer_logic import DEFAULT_MODEL, PLANES, TASKS, NeuralizerParameters

from . import PanelContext
from .widgets import button, number, panel, select, status


def neuralizer_models() -> list[str]:
    """Installed Neuralizer models (bundled `neuralizer_2d` first; user models from $TOPOREG_MODELS)."""
    try:
        from toporeg.models.catalogue import list_models
    except ImportError:
        return [DEFAULT_MODEL]
    names = [m["name"] for m in list_models()
             if "neuralizer" in f"{m['name']} {m.get('architecture') or ''} {m.get('task') or ''}".lower()]
    return names or [DEFAULT_MODEL]


class NeuralizerPanel:
    def __init__(self, ctx: PanelContext):
        self.ctx = ctx
        models = neuralizer_models()
        ctx.state.update({"nz_pairs": [], "nz_status": "", "nz_models": models,
                          "nz_model": DEFAULT_MODEL if DEFAULT_MODEL in models else models[0]})

    def build(self) -> None:
        with panel("Neuralizer", "toporeg-nz", "neuralizer"):
            select("Target volume", "nz_target", "images", "toporeg-nz-target")
            html.Div("Context pairs", classes="text-subtitle-2 mb-1")
            select("Context image", "nz_image", "images", "toporeg-nz-image")
            select("Its label map / output", "nz_output", "all", "toporeg-nz-output")
            button("Add pair", self.add_pair, "toporeg-nz-add", icon="mdi-plus", color="secondary",
                   variant="tonal", disabled="false")  # the next run's pairs can be picked while one runs
            with v3.VList(density="compact", classes="toporeg-nz-pairs mb-2", v_show=("nz_pairs.length",)):
                with v3.VListItem(v_for="(pair, index) in nz_pairs", key="index", classes="toporeg-nz-pair",
                                  title=("`${index + 1}. ${pair.title}`",)):
                    with v3.Template(v_slot_append=True):
                        v3.VBtn(icon="mdi-close", size="x-small", variant="text", classes="toporeg-nz-remove",
                                click=(self.remove_pair, "[index]"))
            select("Task", "nz_task", list(TASKS), "toporeg-nz-task", default="segment")
            number("Label value (0: any non-zero)", "nz_label_value", "toporeg-nz-label-value", default=0)
            select("Slice plane", "nz_plane", list(PLANES), "toporeg-nz-plane", default="axial")
            select("Model", "nz_model", "nz_models", "toporeg-nz-model")
            number("Context size (0: the model's)", "nz_context_size", "toporeg-nz-context-size", default=0)
            v3.VCheckbox(label="Align each context to the target first", v_model=("nz_align", True),
                         classes="toporeg-nz-align", density="compact", hide_details=True)
            button("Run on target", self.start, "toporeg-nz-apply", icon="mdi-play")
            status("nz_status", "toporeg-nz-status")

    def _pairs(self) -> list[tuple]:
        """The listed pairs as nodes; pairs whose nodes left the scene are dropped (and from the list too)."""
        runtime, kept, pairs = self.ctx.runtime, [], []
        for item in self.ctx.state.nz_pairs or []:
            image, output = runtime.node(item["image"]), runtime.node(item["output"])
            if image is not None and output is not None:
                kept.append(item)
                pairs.append((image, output))
        if len(kept) != len(self.ctx.state.nz_pairs or []):
            self.ctx.state.nz_pairs = kept
        return pairs

    def add_pair(self) -> None:
        ctx = self.ctx
        image, output = ctx.node("nz_image"), ctx.node("nz_output")
        try:
            ctx.runtime.neuralizer.check_pair(image, output, ctx.state.nz_task, ctx.integer("nz_label_value") or None)
        except ValueError as exc:  # InputError: one line in the page
            ctx.jobs.fail(f"Add pair: {exc}")
            return
        with ctx.state:
            ctx.state.nz_pairs = [*(ctx.state.nz_pairs or []), {
                "image": image.GetID(), "output": output.GetID(),
                "title": f"{image.GetName()} \u2192 {output.GetName()}"}]
            ctx.state.nz_status = f"{len(ctx.state.nz_pairs)} context pair(s)"
            ctx.state.nz_image, ctx.state.nz_output = None, None

    def remove_pair(self, index: int) -> None:
        pairs = list(self.ctx.state.nz_pairs or [])
        if 0 <= int(index) < len(pairs):
            del pairs[int(index)]
            self.ctx.state.nz_pairs = pairs

    def start(self) -> None:
        ctx = self.ctx
        params = NeuralizerParameters(targetVolume=ctx.node("nz_target"), contextPairs=tuple(self._pairs()),
                                      task=ctx.state.nz_task, labelValue=ctx.integer("nz_label_value") or None,
                                      plane=ctx.state.nz_plane, model=ctx.choice("nz_model", "nz_models"),
                                      contextSize=ctx.integer("nz_context_size") or None,
                                      align=bool(ctx.state.nz_align), device=ctx.state.reg_device or "auto",
                                      opacity=0.6)

        def done(ok: bool, status_line: str) -> None:
            ctx.state.nz_status = status_line
            if ok:
                last = ctx.runtime.neuralizer.last
                ctx.add_results([last.get("output"), last.get("probability")])
                ctx.refresh()

        ctx.jobs.start("Neuralizer", ctx.runtime.neuralizer, params, done)
