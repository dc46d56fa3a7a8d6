"""`toporeg batch MANIFEST --out DIR`: many register / topology / segment / neuralize jobs on dask.distributed."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .common import add_run_options, make_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="run a CSV manifest of jobs (register, topology, segment, neuralize) on dask; resumable",
        description="Each job writes OUT/jobs/ID/ (the subcommand's usual outputs) and OUT/records/ID.json. A job "
                    "that finished with the same arguments and input checksums is skipped, so an interrupted batch "
                    "resumes. OUT/summary.csv, summary.md and batch_report.json list every job. Exit code 0 when "
                    "every job is done, 1 when some failed, 130 when cancelled. See docs/batch.md.")
    p.add_argument("manifest", type=Path, help="CSV: id, operation, the operation's inputs, optional options")
    add_run_options(p, device=False)  # --out (reused to resume), --progress, --cancel-file
    p.add_argument("--scheduler", default="local",
                   help="local (an embedded LocalCluster, default), serial (no dask, this process), or the "
                        "address of a running scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per 2 CPU cores)")
    p.add_argument("--gpus-per-worker", type=int, help="GPUs per LocalCluster worker (default: 1 when CUDA is "
                                                       "available, else 0 = CPU)")
    p.add_argument("--retries", type=int, default=1,
                   help="extra attempts after an unexpected failure (bad input is reported, not retried)")
    p.add_argument("--threads", type=int, help="torch threads per job (default: CPU cores / workers)")
    p.add_argument("--check", action="store_true", help="check the manifest and list what would run, then stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch.manifest import read_manifest
    from ..batch.plan import plan_tasks
    from ..batch.runner import BatchSettings, resolve_gpus, run_tasks
    from ..batch.summary import markdown_table, summary_rows, write_summary
    from ..errors import InputError

    for name in ("workers", "retries", "threads", "gpus_per_worker"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("workers", "threads") else 0):
            raise InputError(f"--{name.replace('_', '-')} must be {'>= 1' if name in ('workers', 'threads') else '>= 0'}")
    settings = BatchSettings(scheduler=args.scheduler, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                             retries=args.retries, threads=args.threads)
    jobs = read_manifest(args.manifest)
    out = args.out.resolve()
    tasks = plan_tasks(jobs, out, device=None if args.scheduler not in ("local", "serial")
                       else ("cuda" if resolve_gpus(settings) else "cpu"))
    todo = sum(not t.skip for t in tasks)
    print(f"toporeg batch: {len(tasks)} job(s), {len(tasks) - todo} already finished, {todo} to run", file=sys.stderr)
    if args.check:
        for task in tasks:
            print(f"{task.id}\t{'skip' if task.skip else 'run'}\ttoporeg {' '.join(task.job.argv)}")
        return 0
    progress = make_progress(args)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: progress.token.cancel())
    try:
        batch = run_tasks(tasks, out, settings, progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    totals = write_summary(out, tasks, batch, ["toporeg", "batch", *sys.argv[2:]] if sys.argv[1:2] == ["batch"]
                           else ["toporeg", "batch", str(args.manifest), "--out", str(args.out)])
    if args.progress != "json":
        print(markdown_table(summary_rows(tasks, batch)), file=sys.stderr)
    print(f"toporeg batch: {totals['done']} done ({totals['skipped']} skipped), {totals['failed']} failed, "
          f"{totals['not_run']} not run, {totals['wall_seconds']:.1f} s; summary in {out / 'summary.md'}",
          file=sys.stderr)
    if batch.cancelled:
        return 130
    return 1 if totals["failed"] or totals["not_run"] else 0
