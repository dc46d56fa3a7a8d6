"""The Adam loop both stages share: one step per iteration, progress report, early stop on a plateau."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .settings import RegistrationSettings


def minimise(loss_fn: Callable[[], torch.Tensor], optimiser: torch.optim.Optimizer, iterations: int,
             settings: RegistrationSettings, report: Callable[[int, float], None]) -> list[float]:
    """Run up to `iterations` steps of `optimiser` on `loss_fn()`; returns the loss history."""
    history: list[float] = []
    for i in range(iterations):
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        report(i + 1, history[-1])  # also raises CancelledError when the user cancelled
        if plateaued(history, settings):
            break
    return history


def plateaued(history: list[float], settings: RegistrationSettings) -> bool:
    """True when the mean loss of the last window improved by less than the relative tolerance."""
    w = settings.early_stop_window
    if len(history) < 2 * w:
        return False
    recent, before = np.mean(history[-w:]), np.mean(history[-2 * w:-w])
    return (before - recent) < settings.early_stop_tolerance * max(abs(before), 1e-8)


def combined_weight(weight: torch.Tensor | None, extra: torch.Tensor | None) -> torch.Tensor | None:
    """Product of optional per-voxel weights (None means all ones)."""
    if extra is None:
        return weight
    return extra if weight is None else weight * extra
