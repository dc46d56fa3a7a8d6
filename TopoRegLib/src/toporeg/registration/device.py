"""Choosing the compute device and falling back to the CPU when the GPU runs out of memory."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

from ..errors import InputError

T = TypeVar("T")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but no CUDA GPU is available (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def run_with_cpu_fallback(fn: Callable[[torch.device], T], device: torch.device,
                          notify: Callable[[str], None]) -> T:
    """Run on `device`; on CUDA out-of-memory, say so and run again on the CPU."""
    try:
        return fn(device)
    except torch.cuda.OutOfMemoryError:
        if device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        notify("GPU out of memory: continuing on the CPU (to stay on the GPU, use a smaller image or --preset fast)")
        return fn(torch.device("cpu"))


SMALL_GRID_VOXELS = 500_000


@contextmanager
def threads_for_grid(voxels: int, device: torch.device) -> Iterator[None]:
    """One CPU thread for small pyramid levels.

    Below ~0.5 M voxels each torch op is too small to split, and with any other load on the machine
    a second OpenMP thread waiting for its core makes every op wait a scheduler tick (measured here:
    a 2 mm level-1/2 iteration took 673 ms with 2 threads under load, 50 ms with 1).
    """
    if device.type != "cpu" or voxels >= SMALL_GRID_VOXELS or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
