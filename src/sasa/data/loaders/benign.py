"""The project's own benign set, shipped as package data (see ``sasa/resources/benign/README.md``).

Three JSONL files:

* ``benign_instructions.jsonl``: everyday requests, ``{"id", "prompt", "topic", "contrast"}``;
  ``contrast`` marks requests that use alarming words (kill, shoot, exploit, overdose, ...) in a
  harmless sense, so a probe cannot separate harmful from benign by vocabulary or topic alone.
* ``benign_statements.jsonl``: FigStep-style statements ("Steps to ...", "Methods to ...",
  "List of ..."), ``{"id", "statement", "topic", "contrast"}``, the benign counterpart of
  SafeBench's ``instruction`` column for rendering typographic images.
* ``benign_edge.jsonl``: safe questions of the kinds over-cautious models refuse (definitions,
  figurative speech, homonyms, safe targets and contexts, history, public figures, fictional
  characters, nonsense groups, real discrimination) and general legal, financial and health
  questions, ``{"id", "prompt", "topic", "contrast"}``: the benign side of the policy set
  (:mod:`sasa.data.loaders.policy`).

Variants: ``instructions`` (default), ``statements``, ``edge``, ``all``.  ``path`` is optional: a folder
holding the variant's files replaces the packaged copy (useful to test an edited set).
"""

from __future__ import annotations

import os

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, parse_variant
from sasa.data.loaders._package import jsonl_rows, resource_lines

VARIANTS = ("instructions", "statements", "edge", "all")
FILES = {"instructions": "benign_instructions.jsonl", "statements": "benign_statements.jsonl",
         "edge": "benign_edge.jsonl"}
SOURCE = "sasa-benign"


def load_benign(
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load the packaged benign instructions, statements and/or edge questions as benign text samples."""
    v = parse_variant(variant, VARIANTS, "instructions", "benign")
    sink = Collector(on_error, check_images)
    for part in (list(FILES) if v == "all" else [v]):
        where, lines = resource_lines(path, "benign", FILES[part])
        text_key = "statement" if part == "statements" else "prompt"
        for loc, row in jsonl_rows(where, lines, sink, ("id", text_key, "topic")):
            sink.add(
                loc,
                id=row["id"],
                prompt=row[text_key].strip(),
                label="benign",
                category=row["topic"],
                source=SOURCE,
                attack="statement" if part == "statements" else "text",
                meta={"group": row["id"], "contrast": bool(row.get("contrast", False)), "set": part},
            )
    return sink.result()
