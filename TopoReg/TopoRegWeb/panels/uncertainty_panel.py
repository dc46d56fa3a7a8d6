"""Uncertainty panel: input volume, model (an uncertainty method -> the bundled `seg_{task}_{method}`, or an installed
segmentation model by name), task, samples -> `UncertaintyParameters` -> the module's `UncertaintyLogic`
(`toporeg segment` in the background). Results as in Slicer: a segmentation with standard terminology, the entropy
map over the input (opacity here), and the sampled masks that "Next sample" cycles through (then the mean again).

State: `unc_input`, `unc_model`, `unc_task`, `unc_samples`, `unc_opacity`, `unc_status`, `unc_legend`,
`unc_has_samples`.
"""

from __future__ import annotations

from TopoRegLogic.topology_display import legend_text
from TopoRegLogic.uncertainty_logic import METHODS, TASKS, UncertaintyParameters

from ..runtime import compact_legend
from . import PanelContext
from .widgets import button, number, panel, select, slider, status

SEGMENTATION_TASKS = ("tissue", "brain", "ambiguous")


def segmentation_models() -> list[str]:
    """The uncertainty methods first (bundled models, picked by task), then every installed segmentation model."""
    try:
        from toporeg.models.catalogue import list_models
    except ImportError:
        return list(METHODS)
    return list(METHODS) + [m["name"] for m in list_models() if m.get("task") in SEGMENTATION_TASKS]


class UncertaintyPanel:
    def __init__(self, ctx: PanelContext):
        self.ctx = ctx
        ctx.state.update({"unc_status": "", "unc_legend": "", "unc_has_samples": False,
                          "unc_models": segmentation_models()})
        ctx.state.change("unc_opacity")(self.on_opacity)

    def build(self) -> None:
        with panel("Uncertainty", "toporeg-unc", "uncertainty"):
            select("Input volume", "unc_input", "images", "toporeg-unc-input")
            select("Model", "unc_model", "unc_models", "toporeg-unc-model", default="unet")
            select("Task (bundled models)", "unc_task", list(TASKS), "toporeg-unc-task", default="tissue")
            number("Samples", "unc_samples", "toporeg-unc-samples", default=16, lo=1)
            button("Segment", self.start, "toporeg-unc-apply", icon="mdi-play")
            button("Next sample", self.next_sample, "toporeg-unc-next", icon="mdi-skip-next",
                   disabled="job_running || !unc_has_samples", color="secondary", variant="tonal")
            slider("Entropy opacity", "unc_opacity", "toporeg-unc-opacity", default=0.5)
            status("unc_status", "toporeg-unc-status")
            status("unc_legend", "toporeg-unc-legend")

    def start(self) -> None:
        ctx = self.ctx
        params = UncertaintyParameters(inputVolume=ctx.node("unc_input"), model=ctx.choice("unc_model", "unc_models"),
                                       task=ctx.state.unc_task, samples=ctx.integer("unc_samples", 0),
                                       device=ctx.state.reg_device or "auto",
                                       opacity=float(ctx.state.unc_opacity))

        def done(ok: bool, status_line: str) -> None:
            ctx.state.unc_status = status_line
            if not ok:
                return
            last = ctx.runtime.uncertainty.last
            ctx.state.unc_legend = legend_text(last["legend"], "bits")
            ctx.state.unc_has_samples = bool(last.get("samples"))
            compact_legend(last["entropy"])
            ctx.add_results([last.get("segmentation"), last.get("entropy"), last.get("samples"),
                             *last.get("probabilities", [])])
            ctx.refresh()

        ctx.jobs.start("Segmentation", ctx.runtime.uncertainty, params, done)

    def next_sample(self) -> None:
        try:
            self.ctx.state.unc_status = self.ctx.runtime.uncertainty.next_sample()
            self.ctx.runtime.render()
        except ValueError as exc:  # no run yet, or its nodes were deleted
            self.ctx.jobs.fail(f"Next sample: {exc}")

    def on_opacity(self, unc_opacity=0.5, **_) -> None:
        self.ctx.runtime.uncertainty.set_opacity(float(unc_opacity))
        self.ctx.runtime.render()
