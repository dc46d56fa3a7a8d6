"""From manifest rows to runnable tasks: device flags, shared control statistics, what a re-run can skip.

Topology rows with a control set do not each recompute the control baselines (O(|C|²) fits): one `toporeg controls`
task per distinct (control set, topology settings) computes them once on the first control's grid, and the rows
read them with `--control-stats`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .manifest import Job, has_option, parsed_arguments
from .records import ChecksumCache, is_finished, job_dir

SHARED_PREFIX = "_controls-"


@dataclass
class Task:
    """One unit of work for a worker; `needs` are the ids of tasks that must finish first."""

    job: Job
    checksums: dict[str, str]
    needs: list[str] = field(default_factory=list)
    skip: bool = False                     # finished by an earlier run with the same arguments and inputs

    @property
    def id(self) -> str:
        return self.job.id

    def payload(self, out: Path, *, retries: int, cancel_file: Path | None, threads: int | None) -> dict[str, Any]:
        """The plain dict a worker receives (picklable, no library objects)."""
        return {"id": self.id, "operation": self.job.operation, "argv": self.job.argv, "checksums": self.checksums,
                "out": str(out), "retries": retries, "cancel_file": str(cancel_file) if cancel_file else None,
                "threads": threads}


def plan_tasks(jobs: list[Job], out: Path, *, device: str | None = None) -> list[Task]:
    """Tasks in submission order (shared statistics first); finished ones marked `skip`."""
    checksum = ChecksumCache()
    shared: dict[str, Task] = {}
    tasks: list[Task] = []
    for job in jobs:
        job = _with_device(job, device)
        needs = []
        if job.controls:
            stats = _control_statistics_job(job)
            if stats.id not in shared:
                shared[stats.id] = Task(stats, checksum.of(stats))
            needs.append(stats.id)
            # the statistics folder is covered by its own task's record; the controls' checksums are in it
            job = replace(job, argv=job.argv + ["--control-stats", str(job_dir(out, stats.id))],
                          inputs=[p for p in job.inputs if p not in job.controls], controls=[])
        tasks.append(Task(job, checksum.of(job), needs))
    ordered = list(shared.values()) + tasks
    for task in ordered:
        task.skip = is_finished(out, task.job, task.checksums) and all(shared[n].skip for n in task.needs)
    return ordered


def _with_device(job: Job, device: str | None) -> Job:
    if device is None or has_option(job.options, "--device"):
        return job
    return replace(job, argv=job.argv + ["--device", device])


def _control_statistics_job(job: Job) -> Job:
    """`toporeg controls` with the row's topology settings; its id is a hash of the controls and settings."""
    args = parsed_arguments(job)
    flags = ["--method", args.method, "--features", args.features, "--preset", args.preset,
             "--iterations", str(args.iterations), "--device", args.device]
    flags += ["--model", args.model] if args.model else []
    flags += ["--deepsim-model", args.deepsim_model] if args.deepsim_model else []
    argv = ["controls", *map(str, job.controls), *flags]
    key = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:12]
    return Job(f"{SHARED_PREFIX}{key}", "controls", argv, list(job.controls), job.row)
