"""Named context sets: the (image, output) pairs that define a Neuralizer task, saved as one small JSON file.

A set is reusable ("my hippocampus examples"): `toporeg neuralize --context-set FILE.json`, the Slicer panel and the
browser all read the same file. Paths are stored relative to the JSON file (POSIX separators), so a folder holding
the JSON and its images can be moved or shared as a whole; a path on another drive (Windows) stays absolute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import Volume, atomic_path, load_volume

FORMAT = "toporeg-context-set/1"
TASKS = ("segment", "image")
PLANES = ("axial", "coronal", "sagittal")


@dataclass
class ContextSet:
    """`name`: shown in lists and messages ('' for an unnamed, ad-hoc set);
    `pairs`: (image path, output path), the output a label map (task `segment`) or an image (task `image`);
    `label_value`: the label that segment tasks binarise (None: any non-zero); `plane`: slice direction in 3D."""

    name: str
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    task: str = "segment"
    label_value: int | None = None
    plane: str = "axial"

    def __post_init__(self) -> None:
        self.pairs = [(Path(a), Path(b)) for a, b in self.pairs]
        if self.task not in TASKS:
            raise InputError(f"unknown context-set task '{self.task}' (use {' or '.join(TASKS)})")
        if self.plane not in PLANES:
            raise InputError(f"unknown plane '{self.plane}' (use {', '.join(PLANES)})")
        if self.label_value is not None:
            if self.task != "segment":
                raise InputError("label_value only applies to segment tasks")
            self.label_value = int(self.label_value)

    def validate(self, source: str | Path | None = None) -> None:
        """Clear errors for an empty set or a missing file (naming the pair and the file)."""
        where = f" of context set '{self.name}'" if self.name else ""
        if not self.pairs:
            raise InputError(f"no context pairs{where}: add at least one (image, output) pair", source)
        for i, pair in enumerate(self.pairs, 1):
            for role, path in zip(("image", "output"), pair):
                if not path.exists():
                    raise InputError(f"{role} of context pair {i}{where} not found", path)

    def volumes(self) -> list[tuple[Volume, Volume]]:
        """Load every pair (outputs as label maps for segment tasks)."""
        self.validate()
        return [(load_volume(a, is_label=False), load_volume(b, is_label=self.task == "segment"))
                for a, b in self.pairs]

    def to_json(self, folder: str | Path) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "task": self.task, "label_value": self.label_value,
                "plane": self.plane,
                "pairs": [{"image": _relative(a, folder), "output": _relative(b, folder)} for a, b in self.pairs]}

    def save(self, path: str | Path) -> Path:
        """Write the set atomically; the paths become relative to `path`'s folder."""
        path = Path(path)
        text = json.dumps(self.to_json(path.resolve().parent), indent=2) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, check_files: bool = True) -> "ContextSet":
        """Read and validate a set; relative paths are taken from the JSON file's folder."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("context set file not found", path) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable context set ({exc})", path) from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"not a TopoReg context set (expected \"format\": \"{FORMAT}\")", path)
        try:
            pairs = [(path.parent / p["image"], path.parent / p["output"]) for p in raw.get("pairs") or []]
            out = cls(name=str(raw.get("name") or path.stem), pairs=pairs, task=raw.get("task", "segment"),
                      label_value=raw.get("label_value"), plane=raw.get("plane", "axial"))
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed context set: every pair needs \"image\" and \"output\" ({exc})", path) \
                from None
        except InputError as exc:
            raise InputError(exc.problem, path) from None
        if check_files:
            out.validate(path)
        return out


def _relative(path: Path, folder: str | Path) -> str:
    """`path` relative to `folder` with '/' separators; absolute when no relative path exists (other drive)."""
    absolute = Path(os.path.abspath(path))
    try:
        return Path(os.path.relpath(absolute, os.path.abspath(folder))).as_posix()
    except ValueError:
        return absolute.as_posix()
