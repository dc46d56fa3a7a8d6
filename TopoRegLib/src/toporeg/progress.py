"""Progress reporting and cancellation shared by the library, the CLI, the Slicer panel and the browser.

Library code receives a `Progress` and calls `progress.update(stage, fraction, message)`; each call also
checks for cancellation and raises `CancelledError`, so a cancel takes effect within one iteration.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from .errors import CancelledError

ProgressCallback = Callable[[str, float, str], None]


class CancelToken:
    """Set by a signal handler, a GUI button, or the appearance of a cancel file."""

    def __init__(self, cancel_file: str | Path | None = None):
        self._event = threading.Event()
        self.cancel_file = Path(cancel_file) if cancel_file else None

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self.cancel_file is not None and self.cancel_file.exists():
            self._event.set()
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise CancelledError("cancelled by user")


@dataclass
class Progress:
    """Fan-out of progress updates to a callback, with a cancellation check on every update."""

    callback: ProgressCallback | None = None
    token: CancelToken = field(default_factory=CancelToken)

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        self.token.raise_if_cancelled()
        if self.callback is not None:
            self.callback(stage, min(max(float(fraction), 0.0), 1.0), message)

    def check(self) -> None:
        self.token.raise_if_cancelled()

    def sub(self, stage: str, start: float, stop: float) -> "Progress":
        """A child reporter mapping its own 0..1 onto [start, stop] of this one, under `stage`."""
        parent = self

        def forward(_stage: str, fraction: float, message: str) -> None:
            if parent.callback is not None:
                parent.callback(stage, start + (stop - start) * fraction, message)

        return Progress(forward, self.token)


def ticker(progress: Progress | None, cancel: CancelToken | None
           ) -> tuple[Progress, Callable[[str, float, str], None]]:
    """(the Progress to pass down, an update function) for a library entry point that takes both a `progress` and
    a separate `cancel` token: updates go to `progress` and also honour `cancel` (which may differ from its token)."""
    progress = progress or Progress(token=cancel or CancelToken())

    def tick(stage: str, fraction: float, message: str = "") -> None:
        progress.update(stage, fraction, message)
        if cancel is not None:
            cancel.raise_if_cancelled()

    return progress, tick


def silent() -> Progress:
    return Progress()


class JsonLinesReporter:
    """`--progress json`: one `{"stage", "fraction", "message"}` object per line (for GUI front ends)."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream  # None: whatever sys.stdout is when a line is written (tests, redirected output)

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        stream = self.stream
        stream.write(json.dumps({"stage": stage, "fraction": round(fraction, 4), "message": message}) + "\n")
        stream.flush()


class BarReporter:
    """Human progress bar on stderr, redrawn at most 10 times a second; plain lines every 10 % when
    stderr is not a terminal (logs stay readable)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30):
        self.stream, self.width = stream, width
        self._last = 0.0
        self._last_decile = -1
        self._start = time.perf_counter()
        self._tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        now = time.perf_counter()
        if not self._tty:
            decile = int(fraction * 10)
            if decile != self._last_decile or (fraction >= 1.0 and stage == "done"):
                self._last_decile = decile
                self.stream.write(f"{fraction * 100:5.1f}% {now - self._start:6.1f}s {stage}: {message}\n")
                self.stream.flush()
            return
        if fraction < 1.0 and now - self._last < 0.1:
            return
        self._last = now
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] {fraction * 100:5.1f}% {now - self._start:6.1f}s {stage}: {message}"
        self.stream.write(line[:120].ljust(120))
        if fraction >= 1.0 and stage == "done":
            self.stream.write("\n")
        self.stream.flush()
