"""Topology heatmap panel: method, features, model, iterations -> `TopologyParameters` (inputs, masks, preset and
device from the registration panel, as in the Slicer module) -> the module's `TopologyLogic` (`toporeg topology` in
the background). The overlay: shown or hidden, colour map, opacity and threshold, applied through the module's
display helpers (`topology_display`) to every slice view's composite node; the legend (display value -> nats) is the
logic's, from the run's report.

State: `topo_method`, `topo_features`, `topo_model`, `topo_iterations` (0: the preset's), `topo_heatmap` (the last
heatmap node), `topo_show`, `topo_colormap`, `topo_opacity`, `topo_threshold`, `topo_legend`, `topo_status`.
"""

from __future__ import annotations

from TopoRegLogic import topology_display as overlay
from TopoRegLogic.nodes import scene_nodes
from TopoRegLogic.params import TOPOLOGY_FEATURES, TOPOLOGY_METHODS
from TopoRegLogic.topology_logic import REFERENCES, TopologyParameters

from ..runtime import compact_legend
from . import PanelContext
from .widgets import button, number, panel, select, slider, status

COLOR_MAPS = [overlay.COLOR_NAME, "PET-Heat", "Iron", "Rainbow", "fMRI", "Grey"]


class TopologyPanel:
    def __init__(self, ctx: PanelContext, registration):
        self.ctx, self.registration = ctx, registration
        self.fixed_id: str | None = None  # the volume the last heatmap was computed on (drawn under it)
        ctx.state.update({"topo_status": "", "topo_legend": "", "topo_heatmap": None,
                          "topo_models": ctx.runtime.topology.available_models()})
        for key, handler in (("topo_show", self.on_show), ("topo_opacity", self.on_opacity),
                             ("topo_threshold", self.on_threshold), ("topo_colormap", self.on_colormap)):
            ctx.state.change(key)(handler)

    def build(self) -> None:
        with panel("Topology heatmap", "toporeg-topo", "topology"):
            select("Method", "topo_method", list(TOPOLOGY_METHODS), "toporeg-topo-method", default="optimize")
            select("Features", "topo_features", list(TOPOLOGY_FEATURES), "toporeg-topo-features",
                   default="intensity")
            select("Model (method 'learned')", "topo_model", "topo_models", "toporeg-topo-model", default="",
                   v_show="topo_method === 'learned'")
            number("Fit iterations (0: the preset's)", "topo_iterations", "toporeg-topo-iterations", default=0)
            button("Compute heatmap", self.start, "toporeg-topo-apply", icon="mdi-play")
            status("topo_status", "toporeg-topo-status")
            from trame.widgets import vuetify3 as v3

            v3.VSwitch(label="Show heatmap", v_model=("topo_show", True), classes="toporeg-topo-show",
                       density="compact", hide_details=True, color="primary", disabled=("!topo_heatmap",))
            select("Colour map", "topo_colormap", COLOR_MAPS, "toporeg-topo-colormap", default=overlay.COLOR_NAME)
            slider("Opacity", "topo_opacity", "toporeg-topo-opacity", default=0.5)
            slider("Threshold", "topo_threshold", "toporeg-topo-threshold", default=0.25)
            status("topo_legend", "toporeg-topo-legend")
            button("Show as segmentation", self.as_segmentation, "toporeg-topo-segment", icon="mdi-shape",
                   disabled="job_running || !topo_heatmap", color="secondary", variant="tonal")

    def start(self) -> None:
        ctx = self.ctx
        iterations = ctx.integer("topo_iterations")
        params = TopologyParameters(**self.registration.inputs(), method=ctx.state.topo_method,
                                    features=ctx.state.topo_features, model=ctx.choice("topo_model", "topo_models"),
                                    iterations=iterations if iterations > 0 else None,
                                    heatmapVolume=ctx.node("topo_heatmap"), opacity=float(ctx.state.topo_opacity),
                                    threshold=float(ctx.state.topo_threshold))

        def done(ok: bool, status_line: str) -> None:
            ctx.state.topo_status = status_line
            if not ok:
                return
            self.fixed_id = params.fixedVolume.GetID()
            last = ctx.runtime.topology.last
            ctx.state.topo_heatmap = last["heatmap"].GetID()
            ctx.state.topo_legend = overlay.legend_text(last["legend"]) if last.get("legend") else ""
            ctx.add_results([last.get(k) for k in ("heatmap", "display", "outlier", "warped", "transform")])
            compact_legend(last["display"])
            self._show(bool(ctx.state.topo_show))
            self.on_colormap(ctx.state.topo_colormap)
            ctx.refresh()

        ctx.jobs.start("Topology heatmap", ctx.runtime.topology, params, done)

    # --- the overlay -------------------------------------------------------------------------------------
    def _display(self):
        heatmap = self.ctx.node("topo_heatmap")
        return None if heatmap is None else heatmap.GetNodeReference(REFERENCES["display"])

    def _show(self, visible: bool) -> None:
        """The display map over its fixed volume in every slice view, or no foreground at all."""
        display, scene = self._display(), self.ctx.runtime.scene
        if display is None:
            return
        if visible:
            fixed = scene.GetNodeByID(self.fixed_id) if self.fixed_id else None
            background = fixed or self.ctx.runtime.background()
            overlay.show_overlay(scene, background, display, float(self.ctx.state.topo_opacity))
        else:
            for composite in scene_nodes(scene, "vtkMRMLSliceCompositeNode"):
                if composite.GetForegroundVolumeID() == display.GetID():
                    composite.SetForegroundVolumeID(None)

    def on_show(self, topo_show=True, **_) -> None:
        self._show(bool(topo_show))
        self.ctx.runtime.render()

    def on_opacity(self, topo_opacity=0.5, **_) -> None:
        self.ctx.runtime.topology.set_opacity(float(topo_opacity))
        self.ctx.runtime.render()

    def on_threshold(self, topo_threshold=0.25, **_) -> None:
        self.ctx.runtime.topology.set_threshold(float(topo_threshold), self.ctx.node("topo_heatmap"))
        self.ctx.runtime.render()

    def on_colormap(self, topo_colormap=None, **_) -> None:
        display = self._display()
        if display is None or not topo_colormap:
            return
        color = overlay.color_node(self.ctx.runtime.scene) if topo_colormap == overlay.COLOR_NAME else \
            self.ctx.runtime.scene.GetFirstNodeByName(topo_colormap)
        if color is not None and display.GetDisplayNode() is not None:
            display.GetDisplayNode().SetAndObserveColorNodeID(color.GetID())
            self.ctx.runtime.render()

    def as_segmentation(self) -> None:
        ctx = self.ctx
        try:
            node, line = ctx.runtime.topology.show_as_segmentation(float(ctx.state.topo_threshold),
                                                                   ctx.node("topo_heatmap"))
        except ValueError as exc:  # no heatmap yet, nothing above the threshold
            ctx.jobs.fail(f"Show as segmentation: {exc}")
            return
        with ctx.state:
            ctx.state.topo_status = line
            ctx.add_results([node])
            ctx.refresh()
