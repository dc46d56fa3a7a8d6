"""Errors TopoReg raises for bad input: one line, naming the file (when there is one) and the problem."""

from __future__ import annotations

from pathlib import Path


class TopoRegError(Exception):
    """Base class for every error TopoReg reports to a user."""


class InputError(TopoRegError, ValueError):
    """The input data or file cannot be used; the message says which and why."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CancelledError(TopoRegError):
    """The user cancelled a long-running operation."""
