"""Background runs of the panel logics, driven from trame's asyncio loop: what the desktop panels do with a QTimer.

A logic's `start_background(params, on_progress, on_done)` starts the `toporeg` CLI in a child process and returns a
`CliRunner`; the runner never blocks and owns no timer, so a task on the server's event loop polls it every 0.2 s
(progress events, then the conclusion: the logic loads the results into the scene and calls `on_done`). The page
stays responsive because nothing here waits on the process. One run at a time for the whole server: the scene is
shared, and so are the two CPU cores such a server usually has.

Page state (shared by every connected page): `job_running`, `job_name`, `job_progress` (0-100), `job_message`,
`job_error` (the last failure, one line) and `job_log` (the failed run's full log).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from TopoRegLogic.background import one_line

POLL_SECONDS = 0.2
log = logging.getLogger("toporeg.web")


class JobRunner:
    """Starts one logic run at a time and reports it into the page state."""

    def __init__(self, server):
        self.server, self.state = server, server.state
        self.logic = None
        self.runner = None
        self.name = ""
        self._task: asyncio.Task | None = None
        self.state.update({"job_running": False, "job_name": "", "job_progress": 0, "job_message": "",
                           "job_error": "", "job_log": "", "job_status": ""})

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def start(self, name: str, logic, params, on_done: Callable[[bool, str], None] | None = None) -> bool:
        """Start `logic.start_background(params, ...)`; a bad input is shown in the page (job_error), not raised.
        `on_done(ok, status)` runs on the event loop once the results are in the scene (or the run failed)."""
        if self.running:
            self.fail(f"{self.name} is still running: wait for it or cancel it first")
            return False

        def progress(event) -> None:
            self.state.job_progress = int(round(100 * max(0.0, min(1.0, event.fraction))))
            self.state.job_message = f"{event.stage}: {event.message}" if event.message else event.stage

        def done(ok: bool, status: str) -> None:
            self.state.job_progress = 100 if ok else 0
            self.state.job_status = status
            self.state.job_message = status
            if not ok and getattr(logic.runner, "state", "") != "cancelled":  # a cancel is no error
                self.state.job_error = f"{name}: {status}"
                self.state.job_log = logic.last.get("log", "")
            if on_done is not None:
                try:
                    on_done(ok, status)
                except Exception as exc:  # noqa: BLE001 - a display problem is shown, the server keeps serving
                    log.exception("TopoReg web: showing the results of %s failed", name)
                    self.state.job_error = f"{name}: showing the results failed: {one_line(exc)}"

        with self.state:
            self.state.update({"job_error": "", "job_log": "", "job_status": "", "job_progress": 0,
                               "job_message": f"{name}: starting"})
            try:
                runner = logic.start_background(params, progress, done)
            except Exception as exc:  # noqa: BLE001 - bad input or missing dependency: one line in the page
                log.info("TopoReg web: %s not started: %s", name, exc)
                self.fail(f"{name}: {one_line(exc)}")
                return False
            self.logic, self.runner, self.name = logic, runner, name
            self.state.job_running = True
            self.state.job_name = name
        self._task = asyncio.get_running_loop().create_task(self._poll(runner))  # trame calls us on its loop
        return True

    async def _poll(self, runner) -> None:
        """Poll until the process ended; each tick's state changes go to the page in one message."""
        try:
            while True:
                with self.state:
                    still = runner.poll()
                    if not still:
                        self.state.job_running = False
                if not still:
                    return
                await asyncio.sleep(POLL_SECONDS)
        except Exception as exc:  # noqa: BLE001 - never leave the page believing a run goes on
            log.exception("TopoReg web: polling %s failed", self.name)
            runner.kill()
            with self.state:
                self.state.job_running = False
                self.state.job_error = f"{self.name}: {one_line(exc)}"

    def cancel(self) -> None:
        """Ask the run to stop (the CLI checks its cancel file every iteration and writes nothing)."""
        if self.running:
            self.logic.cancel()
            self.state.job_message = f"{self.name}: cancelling..."

    def fail(self, message: str) -> None:
        """An error line in the page (inputs refused before any run started, or a problem after one)."""
        with self.state:
            self.state.job_error = message

    def shutdown(self) -> None:
        """Server exit: stop a run still going (its process would otherwise outlive the server)."""
        if self.running:
            self.runner.kill()
