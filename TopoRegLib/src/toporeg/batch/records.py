"""Job records: what makes an interrupted batch resumable.

A job's outputs go to `OUT/jobs/ID/` (written atomically by the subcommand itself); then its record goes to
`OUT/records/ID.json` (atomically too). A job counts as finished only when its record says "done", lists the same
arguments and the same input checksums, and its `report.json` is present; anything else runs again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path
from .manifest import Job

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def input_checksum(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted: a DICOM series)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode())
        digest.update(bytes.fromhex(file_sha256(child)))
    return digest.hexdigest()


class ChecksumCache:
    """Input checksums keyed by (path, size, mtime): a cohort re-uses the same atlas or controls in many rows."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._known:
            self._known[key] = input_checksum(path)
        return self._known[key]

    def of(self, job: Job) -> dict[str, str]:
        return {str(p): self(p) for p in job.inputs}


def job_dir(out: Path, job_id: str) -> Path:
    return out / "jobs" / job_id


def record_path(out: Path, job_id: str) -> Path:
    return out / "records" / f"{job_id}.json"


def write_record(out: Path, record: dict[str, Any]) -> Path:
    """Write `OUT/records/ID.json` atomically (temporary file + rename)."""
    path = record_path(out, record["id"])
    write_text_atomically(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_record(out: Path, job_id: str) -> dict[str, Any] | None:
    path = record_path(out, job_id)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_finished(out: Path, job: Job, checksums: dict[str, str]) -> bool:
    """True when the job ran to completion with these very arguments and inputs."""
    record = read_record(out, job.id)
    return (record is not None and record.get("status") == "done" and record.get("argv") == job.argv
            and record.get("checksums") == checksums and (job_dir(out, job.id) / "report.json").is_file())
