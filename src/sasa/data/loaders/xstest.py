"""XSTest (Röttger et al., NAACL 2024, arXiv 2308.01263): exaggerated-safety test prompts.

Published layout (github.com/paul-rottger/exaggerated-safety): one file ``xstest_prompts.csv`` with
columns ``id, prompt, type, label, focus, note``; 450 prompts, 250 ``safe`` (e.g. ``homonyms``,
``safe_contexts``) and 200 ``unsafe`` contrast prompts (types prefixed ``contrast_``).

``label`` maps ``safe`` -> benign and ``unsafe`` -> harmful; any other value is a bad row.
``category`` is the prompt type; ``focus`` and ``note`` go to ``meta``.
Variants: ``all`` (default), ``safe``, ``unsafe``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, find_first, iter_csv, parse_variant

VARIANTS = ("all", "safe", "unsafe")
COLUMNS = ("id", "prompt", "type", "label", "focus", "note")
LABEL_MAP = {"safe": "benign", "unsafe": "harmful"}


def load_xstest(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load ``xstest_prompts.csv`` (a path to the file or to the folder holding it)."""
    v = parse_variant(variant, VARIANTS, "all", "xstest")
    path = Path(path)
    csv_path = path if path.is_file() else find_first(
        [path / "xstest_prompts.csv", path / "data" / "xstest_prompts.csv"], "XSTest xstest_prompts.csv"
    )
    sink = Collector(on_error, check_images)
    for loc, row in iter_csv(csv_path, COLUMNS, sink):
        raw_label = row["label"].strip().lower()
        if raw_label not in LABEL_MAP:
            sink.bad(loc, f"unknown label {row['label']!r} (expected 'safe' or 'unsafe')")
            continue
        if v != "all" and raw_label != v:
            continue
        rid = row["id"].strip()
        if not rid:
            sink.bad(loc, "empty id")
            continue
        sink.add(
            loc,
            id=f"xstest/{rid}",
            prompt=row["prompt"].strip(),
            label=LABEL_MAP[raw_label],
            category=row["type"].strip() or None,
            source="xstest",
            attack="text",
            meta={"group": f"xstest/{rid}", "focus": row["focus"], "note": row["note"], "xstest_label": raw_label},
        )
    return sink.result()
