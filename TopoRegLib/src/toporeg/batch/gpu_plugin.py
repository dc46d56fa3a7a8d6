"""GPU assignment for LocalCluster workers (imports dask; loaded only when a dask batch starts)."""

from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin


class GpuAssignment(WorkerPlugin):
    """Worker n sees GPUs n·K … n·K+K−1 (K = 0: none), set before the worker's first job initialises CUDA.

    Only for the embedded LocalCluster, whose worker names are 0…N−1; on a real cluster the launcher (SLURM,
    `dask worker --resources GPU=1` with CUDA_VISIBLE_DEVICES) decides."""

    name = "toporeg-gpu-assignment"

    def __init__(self, gpus_per_worker: int):
        self.gpus_per_worker = gpus_per_worker

    def setup(self, worker) -> None:  # noqa: ANN001 - distributed.Worker
        k = self.gpus_per_worker
        try:
            index = int(worker.name)
        except (TypeError, ValueError):
            index = 0
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(index * k + i) for i in range(k))
