"""The server's data folder (`toporeg serve --data DIR`): what the page may list and load, and nothing else.

Why confinement matters: the page sends file names over the websocket, and anyone who can reach the page could send
any path. Every name is therefore a path *relative* to the folder, checked here before anything opens it: absolute
paths (POSIX or Windows, with a drive or a UNC prefix), `..` parts, empty or NUL-containing names are refused, and
the resolved file (symlinks followed) must still lie inside the resolved folder, so a symlink pointing out of it is
refused too. Listing applies the same rule, so the page never even sees an escaping link.

Pure Python (no slicer), so it is unit-testable on its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")  # what Slicer's volume storage node reads
LABEL_HINTS = re.compile(r"(mask|label|seg|aal|tissue|atlas|parc|aseg|roi)", re.I)
MAX_FILES = 2000            # a listing stops here: a data folder is not a whole file system


class OutsideDataFolder(ValueError):
    """A name the page sent does not denote a file inside the data folder (one line for the page)."""


def is_image_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(IMAGE_SUFFIXES) and not lower.endswith(".seg.nrrd")


def looks_like_label(name: str) -> bool:
    """A file name that suggests a label map or mask (brain mask, AAL labels, tissue map, segmentation)."""
    return bool(LABEL_HINTS.search(Path(name).name))


class DataFolder:
    """A folder whose image files the page may load. `root` must exist; it is resolved once (symlinks followed)."""

    def __init__(self, root: str | Path):
        path = Path(root).expanduser()
        if not path.is_dir():
            raise NotADirectoryError(f"data folder not found: {path}")
        self.root = path.resolve(strict=True)

    def __repr__(self) -> str:
        return f"DataFolder({str(self.root)!r})"

    def resolve(self, name: str) -> Path:
        """The file that `name` (relative to the folder, '/' separated) denotes; raises `OutsideDataFolder`."""
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            raise OutsideDataFolder("give a file name inside the data folder")
        posix, windows = PurePosixPath(name), PureWindowsPath(name)
        if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root or name.startswith("~"):
            raise OutsideDataFolder(f"'{name}': absolute paths are not allowed, give a name inside the data folder")
        parts = windows.parts  # splits on both separators
        if any(part == ".." for part in parts):
            raise OutsideDataFolder(f"'{name}': '..' is not allowed, give a name inside the data folder")
        try:
            path = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing file, symlink loop
            raise OutsideDataFolder(f"'{name}': no such file in the data folder") from exc
        if not path.is_relative_to(self.root):
            raise OutsideDataFolder(f"'{name}' leads outside the data folder (a link to elsewhere)")
        if not path.is_file():
            raise OutsideDataFolder(f"'{name}' is not a file")
        return path

    def list_images(self) -> list[str]:
        """Image files inside the folder (sub-folders included, hidden entries skipped), as sorted relative names;
        links whose target lies outside the folder are left out."""
        found: list[str] = []
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                if file.startswith(".") or not is_image_name(file):
                    continue
                relative = Path(folder, file).relative_to(self.root).as_posix()
                try:
                    self.resolve(relative)
                except OutsideDataFolder:
                    continue
                found.append(relative)
                if len(found) >= MAX_FILES:
                    return found
        return found
