"""MM-Vet (Yu et al., ICML 2024, arXiv 2308.02490): integrated vision-language capabilities (utility).

Published layout (github.com/yuweihao/MM-Vet, the released ``mm-vet.zip``)::

    mm-vet/mm-vet.json    {"v1_0": {"imagename": "v1_0.png", "question": ..., "answer": ...,
                                    "capability": ["rec", "ocr", ...]}, ...}
    mm-vet/images/v1_0.png ...

Every question is an ordinary request, labelled benign: MM-Vet measures how much a safety method
costs in helpfulness.  ``category`` is the ``+``-joined sorted capability list; the reference
answer goes to ``meta["answer"]``.  One variant, ``all``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, DataError, ImageCheck, LoadResult, OnError, find_first, parse_variant, read_json

VARIANTS = ("all",)


def load_mmvet(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load ``mm-vet.json`` (a path to the file or its folder) with ``images/`` beside it."""
    parse_variant(variant, VARIANTS, "all", "mmvet")
    p = Path(path)
    meta_path = p if p.is_file() else find_first([p / "mm-vet.json", p / "mm-vet" / "mm-vet.json"], "MM-Vet mm-vet.json")
    data = read_json(meta_path, "MM-Vet mm-vet.json")
    if not isinstance(data, dict):
        raise DataError(f"{meta_path}: expected a JSON object mapping question ids to records")
    images = meta_path.parent / "images"
    sink = Collector(on_error, check_images)
    for key, rec in data.items():
        loc = f"{meta_path}[{key!r}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) \
                or not isinstance(rec.get("imagename"), str):
            sink.bad(loc, "record needs 'question' and 'imagename' strings")
            continue
        caps = rec.get("capability") or []
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            sink.bad(loc, "'capability' must be a list of strings")
            continue
        sink.add(
            loc,
            id=f"mmvet/{key}",
            prompt=rec["question"].strip(),
            image=str((images / rec["imagename"]).resolve()),
            label="benign",
            category="+".join(sorted(caps)) or None,
            source="mmvet",
            attack="image",
            meta={"group": f"mmvet/{key}", "answer": rec.get("answer"), "capability": list(caps)},
        )
    return sink.result()
