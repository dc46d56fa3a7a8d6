"""Run planned tasks on dask.distributed (a LocalCluster, or an existing scheduler), or serially in this process.

Dask does the scheduling, dependencies and worker management; this module only submits, follows completions for
the progress bar, and turns cancellation and lost workers into records. One thread per worker: one job (and so at
most one model) per worker process at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import Progress
from .plan import Task
from .records import read_record, write_record
from .worker import execute_job

CANCEL_FILE = ".cancel-running-jobs"


@dataclass
class BatchSettings:
    scheduler: str = "local"          # "local" (embedded LocalCluster), "serial" (no dask), or a scheduler address
    workers: int | None = None        # LocalCluster workers (default: one per 2 cores, at least 1)
    gpus_per_worker: int | None = None  # default: 1 when CUDA is available, else 0
    retries: int = 1                  # extra attempts after an unexpected failure (bad input is not retried)
    threads: int | None = None        # torch threads per job (default: cores / workers)


@dataclass
class BatchRun:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    workers: int = 1


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def resolve_gpus(settings: BatchSettings) -> int:
    if settings.gpus_per_worker is not None:
        return settings.gpus_per_worker
    import torch

    return 1 if torch.cuda.is_available() else 0


def run_tasks(tasks: list[Task], out: Path, settings: BatchSettings, progress: Progress | None = None) -> BatchRun:
    """Run every task not marked `skip`; records of skipped tasks are read back. Never raises for a failing job."""
    progress = progress or Progress()
    out.mkdir(parents=True, exist_ok=True)
    cancel_file = out / CANCEL_FILE
    cancel_file.unlink(missing_ok=True)
    run = BatchRun()
    for task in tasks:
        if task.skip:
            run.records[task.id] = read_record(out, task.id) or {"id": task.id, "status": "done"}
            run.skipped.append(task.id)
    todo = [t for t in tasks if not t.skip]
    if not todo:
        return run
    start = time.perf_counter()
    relay = _CancelRelay(progress, cancel_file)
    try:
        if settings.scheduler == "serial":
            _run_serial(todo, out, settings, run, progress, cancel_file)
        else:
            _run_dask(todo, out, settings, run, progress, cancel_file)
    finally:
        relay.stop()
        cancel_file.unlink(missing_ok=True)
        run.seconds = round(time.perf_counter() - start, 3)
    return run


class _CancelRelay:
    """Turns a cancel of the batch (signal or the user's cancel file) into the running jobs' cancel file, from a
    thread, so that a job running in this very process (serial) stops too."""

    def __init__(self, progress: Progress, cancel_file: Path):
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(progress, cancel_file), daemon=True)
        self._thread.start()

    def _watch(self, progress: Progress, cancel_file: Path) -> None:
        while not self._done.wait(0.2):
            if progress.token.cancelled:
                cancel_file.touch()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _report(progress: Progress, run: BatchRun, total: int, record: dict[str, Any]) -> None:
    done = len(run.records) - len(run.skipped)
    message = f"{record['id']}: {record['status']}" + (f" ({record.get('error')})" if record.get("error") else "")
    progress.callback and progress.callback("batch", done / max(total, 1), message)


def _run_serial(todo: list[Task], out: Path, settings: BatchSettings, run: BatchRun, progress: Progress,
                cancel_file: Path) -> None:
    threads = settings.threads or os.cpu_count() or 1
    for task in todo:
        if progress.token.cancelled:
            run.cancelled = True
            return
        deps = [run.records[n] for n in task.needs]
        record = execute_job(task.payload(out, retries=settings.retries, cancel_file=cancel_file, threads=threads),
                             *deps)
        run.records[task.id] = record
        _report(progress, run, len(todo), record)
        if record["status"] == "cancelled":
            run.cancelled = True
            return


def _run_dask(todo: list[Task], out: Path, settings: BatchSettings, run: BatchRun, progress: Progress,
              cancel_file: Path) -> None:
    import dask
    from distributed import Client, LocalCluster

    gpus = resolve_gpus(settings)
    local = settings.scheduler == "local"
    workers = settings.workers or default_workers()
    threads = settings.threads or (max(1, (os.cpu_count() or 1) // workers) if local else None)
    cluster = None
    if local:
        # dask's default worker environment (MALLOC_TRIM_THRESHOLD_=65536, one OpenMP thread) made torch jobs ~1.5x
        # slower here (measured: 6.6 s vs 4.3 s per 2 mm registration); threads are managed per job instead
        environ = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(settings.scheduler)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
    run.workers = workers
    try:
        if local:
            from .gpu_plugin import GpuAssignment

            client.register_plugin(GpuAssignment(gpus))
        futures: dict[str, Any] = {}
        for task in todo:
            deps = [futures[n] if n in futures else run.records[n] for n in task.needs]
            payload = task.payload(out, retries=settings.retries, cancel_file=cancel_file, threads=threads)
            futures[task.id] = client.submit(execute_job, payload, *deps, key=f"toporeg-{task.id}-{time.time_ns()}",
                                             pure=False)
        _follow(futures, out, run, progress, len(todo), cancel_file, client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _follow(futures: dict[str, Any], out: Path, run: BatchRun, progress: Progress, total: int, cancel_file: Path,
            client) -> None:
    """Collect results as they complete; on cancel, stop running jobs through the cancel file, drop the rest."""
    pending = dict(futures)
    while pending:
        if progress.token.cancelled:
            run.cancelled = True
            client.cancel([f for f in pending.values() if f.status == "pending"])
            _wait_quietly(list(pending.values()), timeout=60)
            return
        for key in [k for k, f in pending.items() if f.done()]:
            future = pending.pop(key)
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory) or the task was cancelled
                record = {"id": key, "status": "failed", "attempts": None,
                          "error": f"worker lost ({type(exc).__name__}: {exc})"}
                write_record(out, record)
            run.records[key] = record
            _report(progress, run, total, record)
        time.sleep(0.1)


def _wait_quietly(futures: list[Any], timeout: float) -> None:
    from distributed import wait

    try:
        wait(futures, timeout=timeout)
    except Exception:  # noqa: BLE001 - cancelled futures and timeouts are expected here
        pass
