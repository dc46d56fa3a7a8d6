"""The files every task-table benchmark writes (uncertainty, neuralizer): NAME.json (without the figure's arrays),
NAME.md and NAME.png, each stamped with the date, commit and machine."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable

from .registration import git_commit, machine


def without_examples(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without each task's `example` (arrays only the figure needs)."""
    out = dict(doc)
    if "tasks" in doc:
        out["tasks"] = [{k: v for k, v in t.items() if k != "example"} for t in doc["tasks"]]
    return out


def write_bench_outputs(doc: dict[str, Any], out_dir: Path, name: str, markdown: Callable[[dict[str, Any]], str],
                        figure: Callable[[dict[str, Any], Path], None]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_commit(),
           "machine": machine(), **doc}
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps(without_examples(doc), indent=2, default=float) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(doc), encoding="utf-8")
    figure(doc, paths[2])
    return paths
