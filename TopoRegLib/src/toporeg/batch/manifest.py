"""The batch manifest: a CSV with one job per row, checked completely before anything runs.

Columns: `id`, `operation` (register | topology | segment | neuralize), the operation's inputs named as in its
command line (`fixed`, `moving`, `moving_labels`, `image`, `target`, `context` as `img:label;img:label`,
`controls` as `a;b;c` or one folder) and an optional `options` column with extra command-line flags. Relative paths
are relative to the manifest's folder. Every problem of a row is reported with the row's number and id.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

OPERATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # operation: (required input columns, optional input columns)
    "register": (("fixed", "moving"), ("moving_labels",)),
    "topology": (("fixed", "moving"), ("controls",)),
    "segment": (("image",), ()),
    "neuralize": (("target", "context"), ()),
}
INPUT_COLUMNS = ("fixed", "moving", "moving_labels", "image", "target", "context", "controls")
COLUMNS = ("id", "operation", *INPUT_COLUMNS, "options")
RESERVED_OPTIONS = ("--out", "--progress", "--cancel-file")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Job:
    """One manifest row, resolved: the `toporeg` arguments it runs (without --out/--progress/--cancel-file)."""

    id: str
    operation: str
    argv: list[str]
    inputs: list[Path]                      # every input file or folder (checksummed for resume)
    row: int                                # 1-based line number in the manifest (header = 1)
    controls: list[Path] = field(default_factory=list)  # topology: the control set (shared statistics)
    options: list[str] = field(default_factory=list)


class ManifestError(InputError):
    """The manifest has problems; `problems` lists one line per problem (row number, id, what is wrong)."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s), nothing was run:\n  " + "\n  ".join(problems), path)


def read_manifest(path: str | Path) -> list[Job]:
    """Parse and check the whole manifest; raise `ManifestError` with every problem found."""
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", path)
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    problems: list[str] = []
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        problems.append(f"header: unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
    for needed in ("id", "operation"):
        if needed not in header:
            problems.append(f"header: missing column '{needed}'")
    if problems:
        raise ManifestError(path, problems)
    jobs, seen = [], {}
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        job, row_problems = _parse_row(row, line, path.parent)
        job_id = row.get("id", "")
        if job_id in seen:
            row_problems.append(f"id '{job_id}' already used on row {seen[job_id]}")
        seen.setdefault(job_id, line)
        problems += [f"row {line} ({job_id or 'no id'}): {p}" for p in row_problems]
        if job is not None and not row_problems:
            jobs.append(job)
    if not jobs and not problems:
        problems.append("no jobs (the manifest has a header but no rows)")
    if problems:
        raise ManifestError(path, problems)
    return jobs


def _parse_row(row: dict[str, str], line: int, base: Path) -> tuple[Job | None, list[str]]:
    problems: list[str] = []
    job_id, operation = row.get("id", ""), row.get("operation", "")
    if not _ID.match(job_id):
        problems.append(f"id '{job_id}' must be 1-128 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit (it names the job's output folder)")
    if operation not in OPERATIONS:
        return None, problems + [f"operation '{operation}' is not one of {', '.join(OPERATIONS)}"]
    required, optional = OPERATIONS[operation]
    for column in required:
        if not row.get(column):
            problems.append(f"{operation} needs a value in column '{column}'")
    for column in INPUT_COLUMNS:
        if row.get(column) and column not in required + optional:
            problems.append(f"column '{column}' does not apply to {operation}")
    try:
        options = shlex.split(row.get("options", ""))
    except ValueError as exc:
        return None, problems + [f"options: {exc}"]
    for opt in options:
        if opt.split("=", 1)[0] in RESERVED_OPTIONS:
            problems.append(f"options: {opt.split('=', 1)[0]} is set by the batch, remove it")
    if problems:
        return None, problems
    resolve = lambda text: _existing(text, base, problems)  # noqa: E731
    inputs: list[Path] = []
    controls: list[Path] = []
    if operation in ("register", "topology"):
        fixed, moving = resolve(row["fixed"]), resolve(row["moving"])
        argv, inputs = [operation, str(fixed), str(moving)], [fixed, moving]
        if row.get("moving_labels"):
            labels = resolve(row["moving_labels"])
            argv += ["--moving-labels", str(labels)]
            inputs.append(labels)
        if row.get("controls"):
            controls = [resolve(c) for c in _split(row["controls"], ";")]
            inputs += controls
    elif operation == "segment":
        image = resolve(row["image"])
        argv, inputs = ["segment", str(image)], [image]
    else:
        target = resolve(row["target"])
        argv, inputs = ["neuralize", str(target)], [target]
        for pair in _split(row["context"], ";"):
            parts = split_pair(pair)
            if len(parts) != 2:
                problems.append(f"context '{pair}' must be 'image:label'")
                continue
            image, output = resolve(parts[0]), resolve(parts[1])
            argv += ["--context", str(image), str(output)]
            inputs += [image, output]
        if not has_option(options, "--task"):
            argv += ["--task", "segment"]
    argv += options
    if problems:
        return None, problems
    job = Job(job_id, operation, argv, inputs, line, controls, options)
    problems += check_arguments(job)
    return (job, problems) if not problems else (None, problems)


def check_arguments(job: Job) -> list[str]:
    """The row's arguments as its subcommand parses them (a typo in `options` is reported before anything runs)."""
    from ..cli.main import build_parser

    argv = job.argv + ["--out", "OUT"]
    if job.controls:
        argv += ["--controls", *map(str, job.controls)]
    message = io.StringIO()
    with contextlib.redirect_stderr(message):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            last = [ln for ln in message.getvalue().splitlines() if ln.strip()]
            return [f"options: {last[-1].split('error: ', 1)[-1] if last else 'not accepted'}"]
    return []


def parsed_arguments(job: Job) -> argparse.Namespace:
    """The row's arguments parsed by its subcommand (after `check_arguments` passed)."""
    from ..cli.main import build_parser

    return build_parser().parse_args(job.argv + ["--out", "OUT"])


def split_pair(text: str) -> list[str]:
    """'image:label' → [image, label]; a Windows drive's colon ('C:\\a.nii:C:\\b.nii') does not split."""
    def is_drive(i: int) -> bool:
        return (text[i - 1].isalpha() and (i == 1 or text[i - 2] == ":") and i + 1 < len(text)
                and text[i + 1] in "\\/")

    cuts = [i for i, c in enumerate(text) if c == ":" and i > 0 and not is_drive(i)]
    return [text[:cuts[0]], text[cuts[0] + 1:]] if len(cuts) == 1 else [text]


def has_option(options: list[str], name: str) -> bool:
    """`name` among the row's extra flags, as `--name VALUE` or `--name=VALUE`."""
    return any(o == name or o.startswith(f"{name}=") for o in options)


def _split(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator) if part.strip()]


def _existing(text: str, base: Path, problems: list[str]) -> Path:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else (base / path)
    if not path.exists():
        problems.append(f"input not found: {text}")
    return path.resolve()
