"""JailBreakV-28K (Luo et al., COLM 2024, arXiv 2404.03027).

Published layout (huggingface.co/datasets/JailbreakV-28K/JailBreakV-28k, folder ``JailBreakV_28K/``)::

    JailBreakV_28K/JailBreakV_28K.csv        28,000 text-image jailbreak pairs
    JailBreakV_28K/mini_JailBreakV_28K.csv   the mini subset (rows with selected_mini True)
    JailBreakV_28K/RedTeam_2K.csv            the 2,000 underlying harmful queries (not loaded here)
    JailBreakV_28K/{llm_transfer_attack,query_related,figstep}/...   images

CSV columns, per the dataset card: ``id, jailbreak_query, redteam_query, format, policy,
image_path, from, selected_mini, transfer_from_llm``.  ``image_path`` is relative to the
``JailBreakV_28K`` folder; ``format`` is the attack (template, persuade, logic, figstep,
query-relevant); ``policy`` the violated safety policy.

The sample's prompt is ``jailbreak_query`` with its image; ``attack`` is the normalised format
(``template``, ``persuade``, ``logic``, ``figstep``, ``query-relevant``) and ``category`` the policy.
All samples are harmful; ``meta["group"]`` hashes ``redteam_query`` so every attack on one
underlying query lands on the same side of a split.  Variants: ``mini`` (default), ``full``, and ``<mini|full>:<format>`` to
keep one attack format, e.g. ``full:figstep``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tqdm import tqdm

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, find_first, iter_csv, parse_variant

FORMATS = ("template", "persuade", "logic", "figstep", "query-relevant")
VARIANTS = ("mini", "full") + tuple(f"{s}:{f}" for s in ("mini", "full") for f in FORMATS)
REQUIRED = ("jailbreak_query", "redteam_query", "format", "policy", "image_path")
FILES = {"mini": "mini_JailBreakV_28K.csv", "full": "JailBreakV_28K.csv"}


def normalise_format(value: str) -> str:
    return "-".join(value.strip().lower().replace("_", " ").replace("-", " ").split())


def load_jailbreakv(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load JailBreakV-28K (full or mini CSV), optionally one attack format."""
    v = parse_variant(variant, VARIANTS, "mini", "jailbreakv")
    subset, _, fmt = v.partition(":")
    p = Path(path)
    name = FILES[subset]
    csv_path = p if p.is_file() else find_first(
        [p / name, p / "JailBreakV_28K" / name], f"JailBreakV-28K {name}"
    )
    base = csv_path.parent
    sink = Collector(on_error, check_images)
    rows = iter_csv(csv_path, REQUIRED, sink)
    for n, (loc, row) in enumerate(tqdm(rows, desc=f"jailbreakv {subset}", unit="row", disable=None), start=1):
        attack = normalise_format(row["format"])
        if attack not in FORMATS:
            sink.bad(loc, f"unknown attack format {row['format']!r} (expected one of {FORMATS})")
            continue
        if fmt and attack != fmt:
            continue
        rel = row["image_path"].strip()
        if not rel:
            sink.bad(loc, "empty image_path")
            continue
        rid = (row.get("id") or "").strip() or f"row{n}"
        sink.add(
            loc,
            id=f"jailbreakv/{rid}",
            prompt=row["jailbreak_query"].strip(),
            image=str((base / rel).resolve()),
            label="harmful",
            category=row["policy"].strip() or None,
            source="jailbreakv",
            attack=attack,
            meta={
                "group": "jailbreakv/q" + hashlib.sha1(row["redteam_query"].strip().encode()).hexdigest()[:12],
                "redteam_query": row["redteam_query"],
                "from": row.get("from", ""),
                "transfer_from_llm": row.get("transfer_from_llm", "").strip().lower() == "true",
                "selected_mini": row.get("selected_mini", "").strip().lower() == "true",
                "image_path": rel,
            },
        )
    return sink.result()
