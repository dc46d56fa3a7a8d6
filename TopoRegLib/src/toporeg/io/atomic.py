"""Atomic output: write to a hidden temporary sibling, then rename, so readers never see half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def split_suffix(path: Path) -> tuple[str, str]:
    """('brain', '.nii.gz') for 'brain.nii.gz'; knows the double suffixes TopoReg writes."""
    name = path.name
    for double in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if name.lower().endswith(double):
            return name[: -len(double)], name[-len(double):]
    return path.stem, path.suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path with the same suffix; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = split_suffix(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success its files are moved into `path` (created if missing).

    Files already in `path` that the run did not produce are left alone; a failed or cancelled run
    leaves `path` exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        path.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.rglob("*")):
            rel = item.relative_to(tmp)
            dest = path / rel
            if item.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
