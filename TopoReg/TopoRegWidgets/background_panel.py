"""What every section that runs a `toporeg` command in the background does the same way: Apply starts the logic's
run (after asking for missing packages), Cancel asks it to stop, progress and status go to the section's bar and
label, and a failed run shows its full log. Kept in one place so the sections stay the same as they change; each
subclass passes its own widgets and keeps only its parameters, its results and its extra buttons.
"""

import logging
from typing import Callable

from slicer.i18n import tr as _

from TopoRegLogic.background import one_line


class BackgroundPanel:
    """`ui`: the module's child widgets; `logic`: the section's logic (`start_background`, `cancel`, `last`);
    `timer`: the module widget's poll timer (it polls `runner`); `ensure_dependencies()`: asks to install missing
    packages, False when the user declined. The section's own widgets are passed in (not looked up from a name
    prefix) so that the static test still checks each `ui.<name>` against TopoReg.ui; `what` names the run in the
    log when it cannot start. Subclasses call `updateButtons()` once their own widgets are set up."""

    def __init__(self, ui, logic, timer, ensure_dependencies: Callable[[], bool], *, applyButton, cancelButton,
                 progressBar, statusLabel, logTextEdit, what: str):
        self.ui, self.logic, self.timer, self.ensure_dependencies = ui, logic, timer, ensure_dependencies
        self.applyButton, self.cancelButton, self.progressBar = applyButton, cancelButton, progressBar
        self.statusLabel, self.logTextEdit, self.what = statusLabel, logTextEdit, what
        self.runner = None
        applyButton.connect("clicked(bool)", self.onApply)
        cancelButton.connect("clicked(bool)", self.onCancel)

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def updateButtons(self) -> None:
        """Apply and Cancel follow the run; subclasses extend this for buttons that must wait for it too."""
        self.applyButton.enabled = not self.running
        self.cancelButton.enabled = self.running

    def showError(self, exc: Exception) -> None:
        """One line in the section; the details are in the Python log."""
        self.statusLabel.text = _("Error: {message}").format(message=one_line(exc))

    def parameters(self):
        """The section's widgets -> the logic's parameters (subclasses)."""
        raise NotImplementedError

    def beforeStart(self) -> None:
        """Hook run just before the logic starts (e.g. to drop stale inputs); nothing by default."""

    def showResults(self, last: dict) -> None:
        """A succeeded run's nodes into the section's widgets (`last`: the logic's record); nothing by default."""

    def onApply(self) -> None:
        try:
            if not self.ensure_dependencies():
                self.statusLabel.text = _("Cancelled: the required Python packages are not installed.")
                return
            self.logTextEdit.visible = False
            self.beforeStart()
            self.runner = self.logic.start_background(self.parameters(), self.onProgress, self.onDone)
        except Exception as exc:  # bad input or missing dependency: one line in the panel, details in the log
            logging.exception("TopoReg: could not start %s", self.what)
            self.showError(exc)
            return
        self.progressBar.value = 0
        self.progressBar.visible = True
        self.statusLabel.text = _("Running...")
        self.timer.start()
        self.updateButtons()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.statusLabel.text = _("Cancelling...")

    def onProgress(self, event) -> None:
        self.progressBar.value = int(round(100 * event.fraction))
        self.statusLabel.text = f"{event.stage}: {event.message}"

    def onDone(self, ok: bool, status: str) -> None:
        last = self.logic.last
        self.progressBar.value = 100 if ok else 0
        self.progressBar.visible = ok
        self.statusLabel.text = status
        if ok:
            self.showResults(last)
        else:
            self.logTextEdit.setPlainText(last.get("log", ""))
            self.logTextEdit.visible = True
        self.updateButtons()
