"""The TopoReg page: a drawer with the Slicer module's panels next to a four-up layout of real Slicer views (axial, 3D,
sagittal, coronal) streamed by trame-rca, and a bar on top with the background run's progress, Cancel and errors.

The page is state-driven (trame): the panels read and write `server.state`, the runtime's scene is changed only on
the server's event loop (trame callbacks, the job poller, HTTP handlers), so no locking is needed.
"""

from __future__ import annotations

from trame.app import TrameApp
from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3

from .data_folder import DataFolder
from .jobs import JobRunner
from .panels import PanelContext
from .panels.data_panel import DataPanel
from .panels.neuralizer_panel import NeuralizerPanel
from .panels.registration_panel import RegistrationPanel
from .panels.results_panel import ResultsPanel
from .panels.topology_panel import TopologyPanel
from .panels.uncertainty_panel import UncertaintyPanel
from .runtime import WebRuntime

TITLE = "TopoReg"
RESEARCH_USE = "Research use only: not for clinical decisions."
# the views fill what the app bar, drawer and footer leave (Vuetify's layout variables say how much that is)
VIEWS_STYLE = ("position: fixed; top: var(--v-layout-top); left: var(--v-layout-left); right: var(--v-layout-right);"
               " bottom: var(--v-layout-bottom); display: flex;")
# flex items default to min-size "auto" (their image's size): without this the four views do not share the space
VIEW_CSS = (".toporeg-views .layout-grid-container, .toporeg-views .layout-grid-container > div "
            "{ min-width: 0; min-height: 0; }")


class TopoRegWebApp(TrameApp):
    """`data`: the folder the page may load from; `work_dir`: where runs and downloads are written (None: a fresh
    temporary folder, removed at exit)."""

    def __init__(self, data: DataFolder, server=None, work_dir=None):
        super().__init__(server)
        from trame_slicer import module as trame_slicer_module

        self.server.enable_module(trame_slicer_module)
        self.runtime = WebRuntime(self.server, data, work_dir)
        self.jobs = JobRunner(self.server)
        self.state.update({"images": [], "labels": [], "all": [], "panels_open": ["data", "registration", "topology"],
                           **{key: None for key in ("reg_fixed", "reg_moving", "reg_fixed_mask", "reg_moving_mask",
                                                    "unc_input", "nz_target", "nz_image", "nz_output",
                                                    "view_background")}})
        ctx = PanelContext(self.server, self.runtime, self.jobs, self.refresh, self._add)
        self.results = ResultsPanel(ctx)
        self.data_panel = DataPanel(ctx)
        self.registration = RegistrationPanel(ctx)
        self.topology = TopologyPanel(ctx, self.registration)
        self.uncertainty = UncertaintyPanel(ctx)
        self.neuralizer = NeuralizerPanel(ctx)
        self.ctrl.cancel_job = self.jobs.cancel
        self.ctrl.on_server_exited.add(lambda **_: self.jobs.shutdown())
        self._build_ui()

    def _add(self, made: list) -> None:
        self.results.add(made)

    def refresh(self) -> None:
        """The scene's volumes changed: update every select's items; fill empty registration inputs."""
        items = self.runtime.volume_items()
        state = self.state
        with state:
            state.images, state.labels, state.all = items["images"], items["labels"], items["all"]
            ids = [i["value"] for i in items["images"]]
            for key in ("reg_fixed", "reg_moving", "reg_fixed_mask", "reg_moving_mask", "unc_input", "nz_target",
                        "nz_image", "nz_output", "view_background"):
                if state[key] not in ids + [i["value"] for i in items["labels"]]:
                    state[key] = None
            free = [i for i in ids if i not in (state.reg_fixed, state.reg_moving)]
            if state.reg_fixed is None and free:
                state.reg_fixed = free.pop(0)
            if state.reg_moving is None and free:
                state.reg_moving = free.pop(0)
            background = self.runtime.background()
            state.view_background = background.GetID() if background is not None else None
            self.results.refresh()
        self.runtime.render()

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, width=380, theme="dark") as layout:
            self.ui = layout
            layout.title.set_text(TITLE)
            layout.root.classes = "toporeg-app"
            with layout.toolbar:
                self._job_bar()
            with layout.drawer:
                v3.VAlert(text=("job_error",), v_if=("job_error",), type="error", density="compact",
                          closable=True, classes="toporeg-error ma-2 text-caption",
                          click_close="job_error = ''")
                with v3.VExpansionPanels(v_model=("panels_open",), multiple=True, variant="accordion"):
                    for section in (self.data_panel, self.registration, self.topology, self.uncertainty,
                                    self.neuralizer, self.results):
                        section.build()
                html.Div(RESEARCH_USE, classes="text-caption ma-2 toporeg-research-use")
            with layout.content:
                client.Style(VIEW_CSS)
                with html.Div(style=VIEWS_STYLE, classes="toporeg-views"):
                    self.runtime.layout_manager.initialize_layout_grid(layout)

    def _job_bar(self) -> None:
        """Progress, message and Cancel of the background run (and the failed run's log, on demand)."""
        v3.VSpacer()
        with html.Div(classes="d-flex align-center toporeg-job", style="min-width: 45%; gap: 8px;"):
            html.Div("{{ job_running ? job_name : '' }}", classes="text-body-2 toporeg-job-name")
            v3.VProgressLinear(model_value=("job_progress",), v_show=("job_running",), height=14, rounded=True,
                               color="primary", classes="toporeg-job-progress", style="max-width: 240px;")
            html.Div("{{ job_message }}", classes="text-caption toporeg-job-message",
                     style="max-width: 420px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;")
            v3.VBtn("Cancel", click=self.ctrl.cancel_job, v_show=("job_running",), color="warning", size="small",
                    classes="toporeg-job-cancel")
            with v3.VDialog(max_width=900, v_if=("job_log",)):
                with v3.Template(v_slot_activator="{ props }"):
                    v3.VBtn("Log", v_bind="props", size="small", variant="text", classes="toporeg-job-log")
                with v3.VCard(title="Log of the failed run"):
                    html.Pre("{{ job_log }}", style="white-space: pre-wrap; font-size: 11px;", classes="pa-4")
