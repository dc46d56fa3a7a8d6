"""Choosing the compute device and falling back to the CPU when the GPU runs out of memory."""

from __future__ import annotations

from typing import Callable, TypeVar

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
