"""The project's own benign set, shipped as package data (see ``sasa/resources/benign/README.md``).

Two JSONL files:

* ``benign_instructions.jsonl``: everyday requests, ``{"id", "prompt", "topic", "contrast"}``;
  ``contrast`` marks requests that use alarming words (kill, shoot, exploit, overdose, ...) in a
  harmless sense, so a probe cannot separate harmful from benign by vocabulary or topic alone.
* ``benign_statements.jsonl``: FigStep-style statements ("Steps to ...", "Methods to ...",
  "List of ..."), ``{"id", "statement", "topic", "contrast"}``, the benign counterpart of
  SafeBench's ``instruction`` column for rendering typographic images.

Variants: ``instructions`` (default), ``statements``, ``all``.  ``path`` is optional: a folder
holding the two files replaces the packaged copy (useful to test an edited set).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Iterator

from sasa.data.base import Collector, DataError, ImageCheck, LoadResult, OnError, parse_variant

VARIANTS = ("instructions", "statements", "all")
FILES = {"instructions": "benign_instructions.jsonl", "statements": "benign_statements.jsonl"}
SOURCE = "sasa-benign"


def _lines(path: str | os.PathLike | None, name: str) -> tuple[str, Iterator[tuple[int, str]]]:
    if path is None:
        res = resources.files("sasa").joinpath("resources", "benign", name)
        if not res.is_file():
            raise DataError(f"packaged benign set missing: sasa/resources/benign/{name} (broken install?)")
        text = res.read_text(encoding="utf-8")
        return f"sasa/resources/benign/{name}", enumerate(text.splitlines(), start=1)
    p = Path(path) / name
    if not p.is_file():
        raise DataError(f"benign set file not found: {p}")
    return str(p), enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)


def load_benign(
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load the packaged benign instructions and/or statements as benign text samples."""
    v = parse_variant(variant, VARIANTS, "instructions", "benign")
    sink = Collector(on_error, check_images)
    for part in (["instructions", "statements"] if v == "all" else [v]):
        where, lines = _lines(path, FILES[part])
        text_key = "prompt" if part == "instructions" else "statement"
        for lineno, line in lines:
            if not line.strip():
                continue
            loc = f"{where}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                sink.bad(loc, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) \
                    or not isinstance(row.get(text_key), str) or not isinstance(row.get("topic"), str):
                sink.bad(loc, f"expected an object with string 'id', '{text_key}' and 'topic'")
                continue
            sink.add(
                loc,
                id=row["id"],
                prompt=row[text_key].strip(),
                label="benign",
                category=row["topic"],
                source=SOURCE,
                attack="text" if part == "instructions" else "statement",
                meta={"group": row["id"], "contrast": bool(row.get("contrast", False)), "set": part},
            )
    return sink.result()
