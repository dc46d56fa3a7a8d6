"""What runs on a batch worker: one job, in-process, through the same `toporeg` subcommand a user would type.

In-process (not a child process per job) keeps the per-job overhead to the work itself: torch and the library are
imported once per worker. A worker runs one job at a time (one thread), so it holds at most one model; caches are
released after each job. The record is written by the worker as soon as the job ends, so a batch killed while
others still run loses nothing that finished.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from pathlib import Path
from typing import Any

from .records import job_dir, write_record

# summary keys shown per operation (from each job's report.json "metrics"); the record keeps all scalar metrics
KEY_METRICS = {
    "register": ("folding_percent", "similarity_after", "max_displacement_mm"),
    "topology": ("heatmap_nats.median", "heatmap_nats.p99", "outlier_nats.p99"),
    "segment": ("mean_entropy_bits", "mean_entropy_bits_near_labels", "uncertain_volume_ml", "uncertain_area_mm2"),
    "neuralize": ("volume_ml", "area_mm2"),
    "controls": ("controls",),
}


def run_cli(argv: list[str]) -> tuple[str, str | None, bool]:
    """Run one `toporeg` subcommand in this process: (status, error message, worth retrying)."""
    from ..cli.main import build_parser
    from ..errors import CancelledError, TopoRegError

    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args) or 0)
    except CancelledError:
        return "cancelled", "cancelled", False
    except TopoRegError as exc:  # bad input: the same error on every attempt
        return "failed", str(exc), False
    except SystemExit as exc:
        return "failed", f"arguments refused (exit {exc.code})", False
    except MemoryError:
        return "failed", "out of memory (use fewer workers, --preset fast or smaller images)", True
    except Exception as exc:  # noqa: BLE001 - recorded, retried; the other jobs go on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return "failed", f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})", True
    return ("done", None, False) if code == 0 else ("failed", f"exit code {code}", False)


def execute_job(job: dict[str, Any], *dependencies: dict[str, Any]) -> dict[str, Any]:
    """Run `job` (a plain dict from `runner.job_payload`) with retries; write and return its record.

    `dependencies` are the records of jobs this one needs (the shared control statistics); if one failed, this job
    fails with that reason without running."""
    out = Path(job["out"])
    started = time.time()
    record: dict[str, Any] = {"id": job["id"], "operation": job["operation"], "argv": job["argv"],
                              "checksums": job["checksums"], "attempts": 0, "worker_pid": os.getpid()}
    failed = [d for d in dependencies if d.get("status") != "done"]
    if failed:
        record.update(status="failed", error=f"needs {failed[0]['id']}, which failed: {failed[0].get('error')}")
    else:
        _limit_threads(job.get("threads"))
        argv = job["argv"] + ["--out", str(job_dir(out, job["id"])), "--progress", "none"]
        argv += ["--cancel-file", job["cancel_file"]] if job.get("cancel_file") else []
        for attempt in range(1, int(job.get("retries", 0)) + 2):
            record["attempts"] = attempt
            status, error, retry = run_cli(argv)
            record.update(status=status, error=error)
            _release_memory()
            if status == "done" or not retry:
                break
    record["seconds"] = round(time.time() - started, 3)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if record["status"] == "done":
        record["metrics"] = scalar_metrics(job_dir(out, job["id"]) / "report.json")
    if record["status"] != "cancelled":  # a cancelled job left nothing and runs again next time
        write_record(out, record)
    return record


def scalar_metrics(report_path: Path) -> dict[str, float]:
    """The report's numeric metrics, nested keys joined with '.', plus the subcommand's total time."""
    import json

    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            flat[prefix] = float(value)
        elif isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)

    walk("", report.get("metrics", {}), 0)
    total = report.get("timings", {}).get("total_seconds")
    if isinstance(total, (int, float)):
        flat["command_seconds"] = float(total)
    return flat


def _limit_threads(threads: int | None) -> None:
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
