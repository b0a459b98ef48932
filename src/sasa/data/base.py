"""Shared plumbing for the loaders: errors that name file and row, skip bookkeeping, CSV/JSON/image checks.

Every loader follows one contract: bad input either raises :class:`DataError` (``on_error="raise"``,
the default) or is skipped, counted and reported in :attr:`LoadResult.skipped`
(``on_error="skip"``).  Nothing is dropped silently; every message starts with a location
``<file>:<line>`` (CSV, JSONL) or ``<file>[<key>]`` (JSON) so the user can find the bad row.

A file that is missing or cannot be parsed at all (no header, broken JSON) always raises: there is
no row to skip.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from sasa.data.sample import Sample

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
ImageCheck = Literal["verify", "exists", "none"]
ON_ERROR_CHOICES = ("raise", "skip")
IMAGE_CHECK_CHOICES = ("verify", "exists", "none")


class DataError(ValueError):
    """Bad benchmark input; the message names the file and, where there is one, the row."""


@dataclass
class LoadResult:
    """What a loader returns: the samples it could read and every row it skipped, with why."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def extend(self, other: "LoadResult") -> None:
        self.samples.extend(other.samples)
        self.skipped.extend(other.skipped)

    def report(self, limit: int = 20) -> str:
        """A human-readable summary: counts, then up to ``limit`` skipped rows with reasons."""
        lines = [f"{len(self.samples)} samples loaded, {len(self.skipped)} rows skipped"]
        for loc, reason in self.skipped[:limit]:
            lines.append(f"  skipped {loc}: {reason}")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


def check_image_mode(mode: str) -> None:
    if mode not in IMAGE_CHECK_CHOICES:
        raise ValueError(f"check_images must be one of {IMAGE_CHECK_CHOICES}, got {mode!r}")


class Collector:
    """Collects samples for one load, enforcing unique ids and routing problems by ``on_error``."""

    def __init__(self, on_error: OnError = "raise", check_images: ImageCheck = "verify") -> None:
        check_on_error(on_error)
        check_image_mode(check_images)
        self.on_error = on_error
        self.check_images = check_images
        self.samples: list[Sample] = []
        self.skipped: list[tuple[str, str]] = []
        self._where: dict[str, str] = {}
        self._image_checked: dict[str, str | None] = {}  # an image shared by several samples is checked once

    def bad(self, location: str, reason: str) -> None:
        """Report one bad row: raise, or record it as skipped (and log it)."""
        if self.on_error == "raise":
            raise DataError(f"{location}: {reason}")
        log.warning("skipping %s: %s", location, reason)
        self.skipped.append((location, reason))

    def add(self, location: str, **fields: Any) -> Sample | None:
        """Build a :class:`Sample` from ``fields`` and keep it, unless it is invalid or a duplicate."""
        try:
            sample = Sample(**fields)
        except (TypeError, ValueError) as exc:
            self.bad(location, str(exc))
            return None
        return self.keep(location, sample)

    def keep(self, location: str, sample: Sample) -> Sample | None:
        if not sample.prompt.strip() and sample.image is None:
            self.bad(location, f"sample {sample.id!r} has neither prompt text nor image")
            return None
        first = self._where.get(sample.id)
        if first is not None:
            self.bad(location, f"duplicate sample id {sample.id!r} (first seen at {first})")
            return None
        if sample.image is not None and not self.image_ok(location, sample.image):
            return None
        self._where[sample.id] = location
        self.samples.append(sample)
        return sample

    def image_ok(self, location: str, image: str | os.PathLike) -> bool:
        key = os.fspath(image)
        if key not in self._image_checked:
            self._image_checked[key] = image_problem(image, self.check_images)
        problem = self._image_checked[key]
        if problem is not None:
            self.bad(location, problem)
            return False
        return True

    def result(self) -> LoadResult:
        if self.skipped:
            log.warning("%d rows skipped (on_error='skip')", len(self.skipped))
        return LoadResult(self.samples, self.skipped)


def image_problem(path: str | os.PathLike, mode: ImageCheck = "verify") -> str | None:
    """Why ``path`` is not a usable image (missing, unreadable, corrupt), or None when it is fine.

    ``verify`` opens the file with Pillow and runs its integrity check (fast: no full decode);
    ``exists`` only checks the file is there; ``none`` checks nothing.
    """
    if mode == "none":
        return None
    p = Path(path)
    if not p.is_file():
        return f"image not found: {p}"
    if mode == "exists":
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"image unreadable or corrupt: {p} ({type(exc).__name__}: {exc})"
    return None


def require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return p


def find_first(candidates: Iterable[Path], what: str, *, is_dir: bool = False) -> Path:
    """The first candidate that exists; otherwise a DataError listing every place looked."""
    tried = []
    for c in candidates:
        if (c.is_dir() if is_dir else c.is_file()):
            return c
        tried.append(str(c))
    raise DataError(f"{what} not found; looked for: " + ", ".join(tried))


def iter_csv(path: Path, required: Iterable[str], sink: Collector) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(location, row)`` for each well-formed CSV record.

    Locations are ``file:line`` with the physical line where the record starts (the header is
    line 1), so quoted multi-line cells do not shift the numbers.  A missing or empty file, or a
    header without the ``required`` columns, raises; a record with too many or too few fields goes
    to ``sink.bad``.
    """
    path = require_file(path, "CSV file")
    required = list(required)
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty CSV file (no header row)")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}:1: missing required columns {missing}; header is {header}")
            start = reader.line_num + 1
            for record in reader:
                loc = f"{path}:{start}"
                start = reader.line_num + 1
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                if len(record) != len(header):
                    sink.bad(loc, f"row has {len(record)} fields, header has {len(header)}")
                    continue
                yield loc, dict(zip(header, record))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text near line {reader.line_num + 1}: {exc}") from None
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a whole JSON file; a syntax error raises with its line and column."""
    path = require_file(path, what)
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON (column {exc.colno}): {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from None


def text_field(row: dict[str, Any], key: str) -> str:
    """A required non-empty string field; raises ValueError (caller turns it into a bad row)."""
    if key not in row:
        raise ValueError(f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value.strip()


def parse_variant(variant: str | None, allowed: Iterable[str], default: str, benchmark: str) -> str:
    allowed = tuple(allowed)
    v = default if variant is None else variant
    if v not in allowed:
        raise ValueError(f"{benchmark}: unknown variant {v!r}; choose one of {', '.join(allowed)}")
    return v
