"""Cohort-scale batches: a CSV manifest of register / topology / segment / neuralize jobs run on dask.distributed.

- `manifest`: read and check the CSV (every problem of every row reported before anything runs).
- `plan`: rows → tasks (device flags, shared control statistics for Q, what a re-run skips).
- `records`: per-job records with input checksums (resume), written atomically.
- `worker`: one job in a worker process, through the same subcommand a user types, with retries.
- `runner`: LocalCluster / existing scheduler / serial execution, progress and cancel.
- `summary`: the per-job table (CSV, Markdown, JSON).
"""
