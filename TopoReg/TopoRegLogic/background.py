"""What every panel's background run shares, written once: a fresh temporary folder, the `toporeg` CLI through
`CliRunner` (JSON progress, cancel file, full log) and one conclusion (results into the scene, or a one-line reason).

`BackgroundCliLogic` is the base of the panels' logics (topology, uncertainty): it owns the injected launcher,
the temporary root and the runner, and `_start_run` does the folder / inputs / runner / conclusion sequence so a
panel only says how to write its inputs and how to load its outputs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import nodes
from .runner import CliRunner, popen_launcher


def conclude_run(runner, apply: Callable[[], str], user_names: Callable[[str], str], last: dict, work,
                 *, keep_temp: bool, on_done: Callable[[bool, str], None] | None) -> None:
    """What every background run does when its process ends: load the outputs (success), or say why not, in one
    status line; keep the full log; remove the temporary folder; tell the caller."""
    ok, status = False, ""
    try:
        if runner.state == "succeeded":
            status, ok = apply(), True
        elif runner.state == "cancelled":
            status = "Cancelled; no outputs were written."
        else:
            status = f"Failed: {user_names(runner.error)}"
    except Exception as exc:  # noqa: BLE001 - reported as the status line, full log kept
        runner.log.append(f"applying results failed: {exc!r}")
        status = f"Failed: {one_line(exc)}"
    finally:
        last["status"], last["log"] = status, runner.full_log()
        if not keep_temp:
            shutil.rmtree(work, ignore_errors=True)
    if on_done is not None:
        on_done(ok, status)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class BackgroundCliLogic:
    """Base of a panel logic that runs one `toporeg` subcommand at a time in a child process.

    `launcher` / `python`: how the CLI starts (tests inject their own); `temp_root`: where runs write their inputs
    (Slicer: `slicer.app.temporaryPath`); `keep_temp`: keep the folder for inspection (tests). `last` holds what the
    latest run produced (nodes, status, log); `input_names` maps temporary input files to what the user calls them.
    """

    busy_message = "a computation is already running"
    temp_prefix = "TopoReg-"
    model_task: str | None = None  # the model cards' `task` this panel offers (see `available_models`)

    def __init__(self, scene, *, launcher: Callable = popen_launcher, python: str | None = None,
                 temp_root: str | Path | None = None, keep_temp: bool = False):
        self.scene = scene
        self.launcher, self.python, self.temp_root, self.keep_temp = launcher, python, temp_root, keep_temp
        self.runner: CliRunner | None = None
        self.last: dict = {}
        self.input_names: dict[str, str] = {}

    def available_models(self) -> list[str]:
        """Names of the installed models for this panel's task (empty before the library is installed)."""
        try:
            from toporeg.models.catalogue import list_models
        except ImportError:
            return []
        return [m["name"] for m in list_models() if m.get("task") == self.model_task]

    def _start_run(self, write_arguments: Callable[[Path], list[str]], apply: Callable[[Path], str],
                   on_progress: Callable | None, on_done: Callable[[bool, str], None] | None,
                   work_dir: str | Path | None) -> CliRunner:
        """Make the work folder, `write_arguments(work)` -> CLI arguments (outputs go to work/out; the folder is
        removed when this raises), start the CLI; once it succeeded `apply(work/out)` -> status line."""
        if self.runner is not None and self.runner.running:
            raise nodes.input_error(self.busy_message)
        if self.temp_root is not None:
            Path(self.temp_root).mkdir(parents=True, exist_ok=True)
        work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=self.temp_prefix, dir=self.temp_root))
        work.mkdir(parents=True, exist_ok=True)
        try:
            args = write_arguments(work)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise

        def finished(runner: CliRunner) -> None:
            conclude_run(runner, lambda: apply(work / "out"), self.user_names, self.last, work,
                         keep_temp=self.keep_temp, on_done=on_done)

        self.last = {}
        self.runner = CliRunner(work, launcher=self.launcher, python=self.python, on_progress=on_progress,
                                on_finished=finished)
        return self.runner.start(args)

    def _start_snapshot_run(self, snapshot: Any, write_inputs: Callable[[Any, Path], Any],
                            on_progress: Callable | None, on_done: Callable[[bool, str], None] | None,
                            work_dir: str | Path | None) -> CliRunner:
        """`self.validate(snapshot)` (a copy of the parameters: later GUI edits do not reach this run), then
        `_start_run` with `self.cli_arguments(snapshot, write_inputs(snapshot, work), work / "out")` and, once the
        CLI succeeded, `self.apply_results(snapshot, work / "out")`."""
        self.validate(snapshot)
        return self._start_run(
            lambda work: self.cli_arguments(snapshot, write_inputs(snapshot, work), work / "out"),
            lambda out: self.apply_results(snapshot, out), on_progress, on_done, work_dir)

    def user_names(self, text: str) -> str:
        """`text` with temporary input paths replaced by the names the user knows (for error messages)."""
        for path, name in self.input_names.items():
            text = text.replace(path, name)
        return text

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
