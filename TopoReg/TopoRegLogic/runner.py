"""The `toporeg` command line in a background process: JSON progress, cancel file, full log, one-line errors.

The runner never blocks and owns no timer: whoever drives it calls `poll()` periodically (a `qt.QTimer`
in the Slicer panel, `wait()` in scripts and tests). The process itself comes from an injected
*launcher*: `launcher(argv, env) -> process`, where `process` has

    poll() -> int | None        exit code once finished
    read_stdout() -> list[str]  complete lines received since the last call (non-blocking)
    read_stderr() -> list[str]
    kill() -> None

`PopenProcess` (subprocess.Popen + two reader threads) is the default and works inside Slicer. A
`qt.QProcess` adapter fits the same four methods (`readAllStandardOutput`, `state`, `exitCode`, `kill`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CANCELLED_EXIT_CODE = 130  # toporeg.cli.main: CancelledError


@dataclass
class ProgressEvent:
    stage: str
    fraction: float
    message: str


def parse_progress_line(line: str) -> ProgressEvent | None:
    """A `--progress json` line as an event; None for any other output."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        item = json.loads(line)
        return ProgressEvent(str(item["stage"]), float(item["fraction"]), str(item.get("message", "")))
    except (ValueError, KeyError, TypeError):
        return None


def python_executable() -> str:
    """Slicer's `PythonSlicer` launcher when there is one (sets up Slicer's environment), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


def child_environment(base: dict | None = None) -> dict:
    """The environment with the folder holding the `toporeg` package first on PYTHONPATH."""
    import importlib.util

    env = dict(os.environ if base is None else base)
    spec = importlib.util.find_spec("toporeg")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class PopenProcess:
    """Default launcher: `subprocess.Popen` with reader threads feeding queues (poll never blocks)."""

    def __init__(self, argv: list[str], env: dict | None = None):
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                      errors="replace", bufsize=1, creationflags=flags)
        self._out: queue.Queue[str] = queue.Queue()
        self._err: queue.Queue[str] = queue.Queue()
        self._threads = [threading.Thread(target=self._pump, args=(s, q), daemon=True)
                         for s, q in ((self._proc.stdout, self._out), (self._proc.stderr, self._err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, sink: queue.Queue) -> None:
        for line in iter(stream.readline, ""):
            sink.put(line.rstrip("\r\n"))
        stream.close()

    def poll(self) -> int | None:
        code = self._proc.poll()
        if code is not None:
            for thread in self._threads:  # the pipes close right after exit: collect the last lines
                thread.join(timeout=5)
        return code

    @staticmethod
    def _drain(source: queue.Queue) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(source.get_nowait())
            except queue.Empty:
                return lines

    def read_stdout(self) -> list[str]:
        return self._drain(self._out)

    def read_stderr(self) -> list[str]:
        return self._drain(self._err)

    def kill(self) -> None:
        """Kill the process and its children (a `PythonSlicer` launcher starts the real Python as a child)."""
        if self._proc.poll() is not None:
            return
        try:
            import psutil

            for child in psutil.Process(self._proc.pid).children(recursive=True):
                child.kill()
        except Exception:  # noqa: BLE001 - psutil missing or the process already gone: kill the parent only
            pass
        self._proc.kill()


def popen_launcher(argv: list[str], env: dict | None = None) -> PopenProcess:
    return PopenProcess(argv, env)


class CliRunner:
    """One `toporeg` CLI run: `start()`, then `poll()` until it returns False; `cancel()` at any time.

    `state` goes idle -> running -> succeeded | failed | cancelled. `log` keeps every line (stdout text
    that is not progress, and stderr); `error` is the one line to show a user.
    """

    def __init__(self, work_dir: str | Path, *, launcher: Callable = popen_launcher, python: str | None = None,
                 on_progress: Callable[[ProgressEvent], None] | None = None,
                 on_finished: Callable[["CliRunner"], None] | None = None):
        self.work_dir = Path(work_dir)
        self.cancel_file = self.work_dir / "cancel.request"
        self.launcher, self.python = launcher, python or python_executable()
        self.on_progress, self.on_finished = on_progress, on_finished
        self.state, self.returncode, self.error = "idle", None, ""
        self.log: list[str] = []
        self.last_progress: ProgressEvent | None = None
        self._process = None
        self._cancel_requested = False

    def command(self, args: list[str]) -> list[str]:
        return [self.python, "-m", "toporeg.cli.main", *args, "--progress", "json",
                "--cancel-file", str(self.cancel_file)]

    def start(self, args: list[str]) -> "CliRunner":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.cancel_file.exists():
            self.cancel_file.unlink()
        argv = self.command(args)
        self.log.append("$ " + " ".join(argv))
        self.state = "running"
        try:
            self._process = self.launcher(argv, child_environment())
        except OSError as exc:
            self._finish(None, f"cannot start {self.python}: {exc}")
        return self

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """Ask the run to stop: the CLI checks for the cancel file every iteration and writes nothing."""
        if self.running:
            self._cancel_requested = True
            self.cancel_file.parent.mkdir(parents=True, exist_ok=True)
            self.cancel_file.touch()

    def kill(self) -> None:
        """Last resort (e.g. the module is closed): stop the process now."""
        if self._process is not None and self.running:
            self._cancel_requested = True
            self._process.kill()

    def poll(self) -> bool:
        """Forward new progress, notice the end of the process; True while it still runs."""
        if not self.running or self._process is None:
            return False
        self._read()
        code = self._process.poll()
        if code is None:
            return True
        self._read()
        self._finish(code)
        return False

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> str:
        """Poll until the run ends (scripts and tests); kills it after `timeout` seconds. Returns `state`."""
        import time

        start = time.monotonic()
        while self.poll():
            if timeout is not None and time.monotonic() - start > timeout:
                self.kill()
                self._finish(self._process.poll(), f"timed out after {timeout:.0f} s")
                break
            time.sleep(interval)
        return self.state

    def _read(self) -> None:
        for line in self._process.read_stdout():
            event = parse_progress_line(line)
            if event is None:
                self.log.append(line)
                continue
            self.last_progress = event
            if self.on_progress is not None:
                self.on_progress(event)
        self.log.extend(self._process.read_stderr())

    def _finish(self, code: int | None, error: str = "") -> None:
        self.returncode = code
        if code == 0 and not error:
            self.state = "succeeded"
        elif self._cancel_requested or code == CANCELLED_EXIT_CODE:
            self.state, self.error = "cancelled", "cancelled by user"
        else:
            self.state, self.error = "failed", error or self._error_line(code)
        if self.on_finished is not None:
            self.on_finished(self)

    def _error_line(self, code: int | None) -> str:
        lines = [line.strip() for line in self.log if line.strip() and not line.startswith("$ ")]
        for line in reversed(lines):
            if line.startswith("toporeg: error:"):
                return line[len("toporeg: error:"):].strip()
        if lines:
            return f"{lines[-1]} (exit code {code})"
        return f"toporeg exited with code {code}"

    def full_log(self) -> str:
        return "\n".join(self.log)
