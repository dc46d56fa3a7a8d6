"""Data panel: load volumes from the server's data folder (only names the folder lists; `DataFolder.resolve` refuses
anything else, whatever the page sends) and choose which volume the views show.

State: `data_files` (the folder's image files), `data_selected`, `data_load_as` (auto / image / label map),
`data_status`, `view_background` (the slice views' background volume).
"""

from __future__ import annotations

import logging

from TopoRegLogic.background import one_line

from . import PanelContext
from .widgets import button, panel, select, status

LOAD_AS = [{"title": "auto (masks and labels by name)", "value": "auto"}, {"title": "image", "value": "image"},
           {"title": "label map", "value": "label"}]
log = logging.getLogger("toporeg.web")


class DataPanel:
    def __init__(self, ctx: PanelContext):
        self.ctx = ctx
        ctx.state.update({"data_files": [], "data_selected": [], "data_status": "",
                          "data_folder": str(ctx.runtime.data.root)})
        ctx.state.change("view_background")(self.on_background)
        self.list_files()

    def build(self) -> None:
        with panel("Data", "toporeg-data", "data"):
            from trame.widgets import html

            html.Div("Folder: {{ data_folder }}", classes="text-caption mb-2 toporeg-data-folder")
            select("Files in the data folder", "data_selected", "data_files", "toporeg-data-files", default=[],
                   multiple=True)
            select("Load as", "data_load_as", LOAD_AS, "toporeg-data-load-as", default="auto")
            button("Load", self.load_selected, "toporeg-data-load", icon="mdi-folder-open", disabled="false")
            button("Rescan", self.list_files, "toporeg-data-rescan", icon="mdi-refresh", disabled="false",
                   color="secondary", variant="tonal")
            status("data_status", "toporeg-data-status")
            select("Shown in the views", "view_background", "images", "toporeg-view-background")

    def list_files(self) -> None:
        self.ctx.state.data_files = self.ctx.runtime.data.list_images()

    def load_selected(self) -> None:
        """Load every selected file; each refusal or read error is reported, the others still load."""
        state, runtime = self.ctx.state, self.ctx.runtime
        as_label = {"image": False, "label": True}.get(state.data_load_as)
        loaded, problems = [], []
        for name in list(state.data_selected or []):
            try:
                loaded.append(runtime.load(name, as_label).GetName())
            except Exception as exc:  # noqa: BLE001 - outside the folder, unreadable: one line each in the page
                log.info("TopoReg web: cannot load %r: %s", name, exc)
                problems.append(one_line(exc))
        with state:
            state.data_selected = []
            state.data_status = (f"Loaded {', '.join(loaded)}" if loaded else "Nothing loaded") + \
                ("" if not problems else f"; {len(problems)} not loaded")
            if problems:
                self.ctx.jobs.fail("Load: " + "; ".join(problems))
            self.ctx.refresh()

    def on_background(self, view_background=None, **_) -> None:
        node = self.ctx.runtime.node(view_background)
        if node is not None and node is not self.ctx.runtime.background():
            self.ctx.runtime.show_background(node)
