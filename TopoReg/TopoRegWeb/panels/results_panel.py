"""Results panel: every node a run made (warped volume, transform, Jacobian, heatmaps, segmentations, Neuralizer
outputs) with a download link. The link is a plain HTTP GET of `toporeg/download/<node id>`, served by `serve.py`
behind the same access check as the page; only IDs registered here are served, so the URL cannot name a file.

State: `results` ([{title, value (node ID), kind, href}]).
"""

from __future__ import annotations

from trame.widgets import vuetify3 as v3

from . import PanelContext
from .widgets import panel

DOWNLOAD_ROUTE = "toporeg/download"
KINDS = (("vtkMRMLSegmentationNode", "segmentation, .seg.nrrd"), ("vtkMRMLTransformNode", "transform, .h5"),
         ("vtkMRMLLabelMapVolumeNode", "label map, .nii.gz"), ("vtkMRMLScalarVolumeNode", "volume, .nii.gz"))


def kind_of(node) -> str | None:
    return next((text for cls, text in KINDS if node.IsA(cls)), None)


class ResultsPanel:
    def __init__(self, ctx: PanelContext):
        self.ctx = ctx
        self.ids: list[str] = []
        ctx.state.results = []

    def build(self) -> None:
        with panel("Results", "toporeg-results", "results"):
            v3.VAlert(text="Results of the runs appear here.", v_show=("!results.length",), density="compact",
                      variant="tonal", classes="text-caption")
            with v3.VList(density="compact", classes="toporeg-results-list"):
                with v3.VListItem(v_for="item in results", key="item.value", classes="toporeg-result",
                                  title=("item.title",), subtitle=("item.kind",)):
                    with v3.Template(v_slot_append=True):
                        v3.VBtn(icon="mdi-download", size="small", variant="text", href=("item.href",),
                                target="_blank", download=("item.title",), classes="toporeg-result-download")

    def add(self, made: list) -> None:
        """Register the nodes a run made (None entries and nodes already listed are skipped)."""
        for node in made:
            if node is not None and kind_of(node) and node.GetID() not in self.ids:
                self.ids.append(node.GetID())
        self.refresh()

    def allowed(self, node_id: str):
        """The node behind a download request, only when this panel lists it (and it is still in the scene)."""
        return self.ctx.runtime.node(node_id) if node_id in self.ids else None

    def refresh(self) -> None:
        items = []
        for node_id in list(self.ids):
            node = self.ctx.runtime.node(node_id)
            if node is None:
                self.ids.remove(node_id)
                continue
            items.append({"title": node.GetName(), "value": node_id, "kind": kind_of(node),
                          "href": f"{DOWNLOAD_ROUTE}/{node_id}"})
        self.ctx.state.results = items
