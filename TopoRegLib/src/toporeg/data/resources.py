"""Where TopoReg's bundled files live: the repository's or the installed extension's `Resources/`.

Search order: `$TOPOREG_RESOURCES`, then `Resources/` beside the source tree (development checkout and
the Slicer extension layout, where the package is installed next to `Resources/`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def resources_dir() -> Path:
    env = os.environ.get("TOPOREG_RESOURCES")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "Resources"
        if (candidate / "SampleData").is_dir():
            return candidate
    raise InputError("cannot find TopoReg's Resources folder; set TOPOREG_RESOURCES to it")


def sample_data_dir() -> Path:
    return resources_dir() / "SampleData"


def sample_path(name: str) -> Path:
    path = sample_data_dir() / name
    if not path.exists():
        raise InputError("bundled sample file is missing (run scripts/make_sample_data.py)", path)
    return path


def model_dirs() -> list[Path]:
    """Bundled models first, then the user's cache folder ($TOPOREG_MODELS or ~/.cache/toporeg/models)."""
    dirs = []
    try:
        dirs.append(resources_dir() / "Models")
    except InputError:
        pass
    user = os.environ.get("TOPOREG_MODELS") or Path.home() / ".cache" / "toporeg" / "models"
    dirs.append(Path(user))
    return [d for d in dirs if d.is_dir()]
