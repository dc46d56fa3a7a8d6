"""`report.json`: settings, versions, timings (with `total_seconds`) and key metrics of a run."""

from __future__ import annotations

import json
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__


def versions() -> dict[str, str]:
    out = {"toporeg": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "numpy": np.__version__}
    for mod in ("torch", "SimpleITK", "nibabel"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional module is simply not reported
            pass
    return out


class Timings(dict):
    """Stage name → seconds, filled by the `stage` context manager."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 4)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    report = {"versions": versions(), **report}
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n", encoding="utf-8")
    return path
