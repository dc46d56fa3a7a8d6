"""The batch's summary: one row per job (status, attempts, time, key metrics, error) as CSV, Markdown and JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .plan import Task
from .records import write_text_atomically
from .runner import BatchRun
from .worker import KEY_METRICS


def summary_rows(tasks: list[Task], run: BatchRun) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        record = run.records.get(task.id)
        status = "not run" if record is None else record.get("status", "?")
        if task.id in run.skipped:
            status = "done (skipped: finished earlier)"
        metrics = (record or {}).get("metrics", {})
        keys = [k for k in KEY_METRICS.get(task.job.operation, ()) if k in metrics]
        rows.append({"id": task.id, "operation": task.job.operation, "status": status,
                     "attempts": (record or {}).get("attempts", ""), "seconds": (record or {}).get("seconds", ""),
                     "metrics": "; ".join(f"{k}={metrics[k]:.4g}" for k in keys),
                     "error": (record or {}).get("error") or ""})
    return rows


def batch_totals(tasks: list[Task], run: BatchRun) -> dict[str, Any]:
    statuses = [(run.records.get(t.id) or {}).get("status", "not run") for t in tasks]
    ran = len(tasks) - len(run.skipped)
    finished = sum(1 for t in tasks if t.id not in run.skipped and (run.records.get(t.id) or {}).get("status")
                   in ("done", "failed"))
    return {"jobs": len(tasks), "done": statuses.count("done"), "failed": statuses.count("failed"),
            "skipped": len(run.skipped), "not_run": len(tasks) - len(run.records), "cancelled": run.cancelled,
            "ran": ran, "workers": run.workers, "wall_seconds": run.seconds,
            "jobs_per_minute": round(60.0 * finished / run.seconds, 3) if run.seconds > 0 and finished else None}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = ["id", "operation", "status", "attempts", "seconds", "metrics", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[h]).replace("|", "\\|").replace("\n", " ") for h in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, tasks: list[Task], run: BatchRun, command: list[str]) -> dict[str, Any]:
    """Write OUT/summary.csv, OUT/summary.md and OUT/batch_report.json (each atomically); return the totals."""
    rows, totals = summary_rows(tasks, run), batch_totals(tasks, run)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["id"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(out / "summary.csv", buffer.getvalue())
    write_text_atomically(out / "summary.md", f"# Batch summary\n\n`{' '.join(command)}`\n\n" + markdown_table(rows)
                 + "\n" + ", ".join(f"{k}: {v}" for k, v in totals.items()) + "\n")
    write_text_atomically(out / "batch_report.json", json.dumps({"command": command, "totals": totals, "jobs": rows},
                                                       indent=2, default=str) + "\n")
    return totals
