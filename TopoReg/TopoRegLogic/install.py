"""First-use dependency check and installation that never replaces Slicer's own packages.

Rules (TotalSegmentator / SlicerNNUnet practice):
- torch comes only from SlicerPyTorch's `PyTorchUtils` (it picks the CUDA build matching the driver);
  without that extension the user is told to install it; this module never pip-installs torch.
- numpy, SimpleITK, vtk and torch are *protected*: every pip call carries a constraints file pinning the
  installed versions, so pip fails instead of replacing them; a missing SimpleITK/vtk is an error (they
  ship with Slicer and Slicer's SimpleITK has a special IO class).
- nibabel and safetensors are installed after the user agreed (`ask` callback); the `toporeg` package is
  bundled next to the module; if it is not importable it is installed from the bundled folder with
  `--no-deps`.
Everything is a plain function with injected `find_spec` / `version` / `ask` / `pip_install`, so it is
tested without Qt or network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REQUIRED = {"torch": "torch", "SimpleITK": "SimpleITK", "nibabel": "nibabel", "safetensors": "safetensors"}
PROTECTED = ("numpy", "SimpleITK", "vtk", "torch")
PIP_INSTALLABLE = ("nibabel", "safetensors")


class DependencyError(RuntimeError):
    """A dependency is missing and cannot (or may not) be installed from here; the message says what to do."""


@dataclass
class DependencyReport:
    missing: list[str] = field(default_factory=list)   # import names
    toporeg_importable: bool = True

    @property
    def ok(self) -> bool:
        return not self.missing and self.toporeg_importable


def check_dependencies(find_spec: Callable = importlib.util.find_spec) -> DependencyReport:
    missing = [name for name in REQUIRED if find_spec(name) is None]
    return DependencyReport(missing=missing, toporeg_importable=find_spec("toporeg") is not None)


def installed_versions(names=PROTECTED, version: Callable = importlib.metadata.version) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def constraints_text(versions: dict[str, str]) -> str:
    """pip constraints pinning the protected packages at their installed versions."""
    return "".join(f"{name}=={ver}\n" for name, ver in sorted(versions.items()))


def pip_plan(report: DependencyReport, constraints_file: str | Path, bundled_toporeg: str | Path | None = None
             ) -> list[list[str]]:
    """pip argument lists (without the leading `install`, as `slicer.util.pip_install` takes them)."""
    plan = []
    packages = [REQUIRED[name] for name in report.missing if name in PIP_INSTALLABLE]
    if packages:
        plan.append(["-c", str(constraints_file), *packages])
    if not report.toporeg_importable:
        if bundled_toporeg is None or not (Path(bundled_toporeg) / "pyproject.toml").exists():
            raise DependencyError("the toporeg package is missing from this installation; reinstall the extension")
        plan.append(["--no-deps", str(bundled_toporeg)])
    return plan


def describe(report: DependencyReport) -> str:
    lines = [f"- {REQUIRED[name]}" for name in report.missing]
    if not report.toporeg_importable:
        lines.append("- toporeg (from the extension's bundled copy, without dependencies)")
    return ("TopoReg needs these Python packages:\n" + "\n".join(lines) +
            "\nSlicer's numpy, SimpleITK, vtk and torch are never replaced. Installation needs a network "
            "connection and may take a few minutes.")


def default_pip_install(args: list[str]) -> None:
    """Outside Slicer: `python -m pip install ARGS` (inside Slicer pass `slicer.util.pip_install`)."""
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


def pytorch_utils_installer():
    """(is_installed, install) from SlicerPyTorch's PyTorchUtils when that extension is present, else None."""
    try:
        import PyTorchUtils  # noqa: PLC0415 - only inside Slicer with the PyTorch extension
    except ImportError:
        return None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    return (lambda: bool(logic.torchInstalled()),
            lambda: logic.installTorch(askConfirmation=False))  # ensure_dependencies asked already


def ensure_dependencies(ask: Callable[[str], bool], *, pip_install: Callable[[list[str]], None] = default_pip_install,
                        torch_installer=None, find_spec: Callable = importlib.util.find_spec,
                        version: Callable = importlib.metadata.version,
                        bundled_toporeg: str | Path | None = None) -> bool:
    """Make every dependency importable; returns False when the user declined, raises DependencyError
    when something must be done by hand. `torch_installer` is `pytorch_utils_installer()`'s pair."""
    report = check_dependencies(find_spec)
    if report.ok:
        return True
    for name in ("SimpleITK",):
        if name in report.missing:
            raise DependencyError(f"{name} is part of Slicer but cannot be imported; reinstall Slicer "
                                  "(an extension may have replaced it)")
    if "torch" in report.missing:
        if torch_installer is None:
            raise DependencyError("PyTorch is required: install the 'PyTorch' extension from the Extensions "
                                  "Manager, restart Slicer, and use its PyTorch Utils module to install torch")
        _is_installed, install = torch_installer
        if not ask("TopoReg needs PyTorch. Install it now with PyTorch Utils?"):
            return False
        install()
        report = check_dependencies(find_spec)
        if "torch" in report.missing:
            raise DependencyError("PyTorch was not installed; use the PyTorch Utils module, then restart Slicer")
    if report.ok:
        return True
    if not ask(describe(report)):
        return False
    with tempfile.TemporaryDirectory(prefix="TopoReg-pip-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraints_text(installed_versions(PROTECTED, version)), encoding="utf-8")
        for args in pip_plan(report, constraints, bundled_toporeg):
            pip_install(args)
    importlib.invalidate_caches()
    final = check_dependencies(find_spec)
    if not final.ok:
        raise DependencyError("still missing after installation: " + ", ".join(final.missing or ["toporeg"]))
    return True
