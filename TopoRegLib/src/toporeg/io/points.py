"""Point lists (landmarks) from Slicer markups (.mrk.json, .fcsv) or plain CSV/TXT, as (K, 3) RAS millimetres.

Slicer writes markups in LPS by default (`coordinateSystem` in .mrk.json, `# CoordinateSystem = LPS` in .fcsv);
plain files are RAS unless their first line says `# LPS`. Every reader returns RAS, the library's one space.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import InputError

_LPS = np.array([-1.0, -1.0, 1.0])


def read_points(path: str | Path) -> np.ndarray:
    """(K, 3) RAS-mm points; 2D points get z = 0. Refuses empty lists and non-finite coordinates."""
    path = Path(path)
    if not path.exists():
        raise InputError("point file not found", path)
    name = path.name.lower()
    try:
        if name.endswith(".json"):
            points = _markups_json(path)
        elif name.endswith(".fcsv"):
            points = _fcsv(path)
        elif name.endswith((".csv", ".txt")):
            points = _plain(path)
        else:
            raise InputError("unsupported point file (use .mrk.json, .fcsv, .csv or .txt)", path)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"could not read points ({exc})", path) from None
    if points.size == 0:
        raise InputError("the point file holds no points", path)
    if not np.isfinite(points).all():
        raise InputError("the point file holds NaN or infinite coordinates", path)
    return points


def _markups_json(path: Path) -> np.ndarray:
    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for markup in doc.get("markups", []):
        flip = _LPS if str(markup.get("coordinateSystem", "LPS")).upper() == "LPS" else np.ones(3)
        for point in markup.get("controlPoints", []):
            rows.append(np.asarray(point["position"], float)[:3] * flip)
    return np.asarray(rows, float).reshape(-1, 3)


def _fcsv(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="utf-8").splitlines()
    lps = any(line.startswith("#") and "CoordinateSystem" in line and ("LPS" in line or "= 1" in line)
              for line in lines)
    rows = [np.asarray(r[1:4], float) for r in csv.reader(line for line in lines if line and not line.startswith("#"))]
    points = np.asarray(rows, float).reshape(-1, 3)
    return points * _LPS if lps else points


def _plain(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="utf-8").splitlines()
    lps = bool(lines) and lines[0].strip().lower().startswith("#") and "lps" in lines[0].lower()
    rows = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        values = [float(v) for v in text.replace(",", " ").split()]
        if len(values) not in (2, 3):
            raise ValueError(f"expected 2 or 3 coordinates per line, got {len(values)}")
        rows.append(values + [0.0] * (3 - len(values)))
    points = np.asarray(rows, float).reshape(-1, 3)
    return points * _LPS if lps else points
