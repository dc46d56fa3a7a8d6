"""What every output-writing subcommand shares: --out/--progress/--cancel-file, signals, atomic output, report.json."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..io.atomic import atomic_directory
from ..progress import BarReporter, CancelToken, JsonLinesReporter, Progress
from ..report import Timings, write_report

Body = Callable[[argparse.Namespace, Path, Progress, Timings], dict[str, Any]]


def add_run_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                        help="progress on stderr as a bar (default), JSON lines on stdout, or none")
    parser.add_argument("--cancel-file", type=Path, default=None,
                        help="stop cleanly (no partial outputs) as soon as this file exists")
    if device:
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                            help="where to compute (auto: CUDA when available)")


def add_preset_options(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--preset fast|default|accurate with the --fast / --accurate shorthands (CONVENTIONS.md)."""
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--preset", choices=["fast", "default", "accurate"], default="default", help=help)
    speed.add_argument("--fast", dest="preset", action="store_const", const="fast")
    speed.add_argument("--accurate", dest="preset", action="store_const", const="accurate")


def make_progress(args: argparse.Namespace) -> Progress:
    token = CancelToken(getattr(args, "cancel_file", None))
    reporter = {"bar": BarReporter, "json": JsonLinesReporter}.get(getattr(args, "progress", "none"))
    return Progress(reporter() if reporter else None, token)


def run_with_outputs(args: argparse.Namespace, command: str, body: Body) -> int:
    """Run `body` writing into a temporary folder that replaces nothing until it succeeds."""
    progress = make_progress(args)
    # signal handlers can only be installed from the main thread (a dask worker runs jobs in another one)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}

    def on_signal(signum, _frame):  # noqa: ANN001 - signal handler signature
        progress.token.cancel()

    for sig in previous:
        signal.signal(sig, on_signal)
    timings = Timings()
    start = time.perf_counter()
    try:
        with atomic_directory(args.out) as tmp:
            summary = body(args, tmp, progress, timings)
            timings["total_seconds"] = round(time.perf_counter() - start, 4)
            write_report(tmp / "report.json", {"command": command, "settings": _settings(args),
                                               "timings": dict(timings), **summary})
            progress.update("done", 1.0, f"wrote {args.out}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in ("func", "progress", "cancel_file", "out")}
