"""VLGuard test set (Zong et al., ICML 2024, arXiv 2402.02207).

Published layout (github.com/ys-zong/VLGuard, mirrored at huggingface.co/datasets/ys-zong/VLGuard)::

    test.json        a JSON list of image records
    test/<image>     images from test.zip, e.g. test/bad_ads/<uuid>.png

Each record has ``id``, ``image`` (path relative to the image folder), ``safe`` (bool) and
``instr-resp`` (a list of instruction/response pairs).  For an unsafe image (``safe: false``, with
``harmful_category`` and ``harmful_subcategory``) the first pair's ``instruction`` is the harmful
request.  A safe image carries one pair with ``safe_instruction`` and one with
``unsafe_instruction``.  The official evaluation (``VLGuard_eval.py``) builds three subsets from
this: ``unsafes`` (unsafe image + its instruction), ``safe_unsafes`` (safe image + unsafe
instruction) and ``safe_safes`` (safe image + safe instruction).

Labels: ``unsafes`` and ``safe_unsafes`` are harmful, ``safe_safes`` benign.  The image folder is
looked for at ``test/`` next to ``test.json`` (also the ``VLGuard/test`` folder used by the eval
script, or the folder itself).  Variants: ``all`` (default), ``unsafes``, ``safe_unsafes``,
``safe_safes``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, DataError, ImageCheck, LoadResult, OnError, find_first, parse_variant, read_json

SUBSETS = ("unsafes", "safe_unsafes", "safe_safes")
VARIANTS = ("all",) + SUBSETS


def _image_root(root: Path, first_image: str | None) -> Path:
    candidates = [root / "test", root / "VLGuard" / "test", root / "data" / "VLGuard" / "test", root]
    if first_image:
        for c in candidates:
            if (c / first_image).is_file():
                return c
    return next((c for c in candidates if c.is_dir() and c != root), root / "test")


def load_vlguard(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load VLGuard ``test.json`` (a path to the file or to its folder) with its images."""
    v = parse_variant(variant, VARIANTS, "all", "vlguard")
    subsets = SUBSETS if v == "all" else (v,)
    p = Path(path)
    meta_path = p if p.is_file() else find_first([p / "test.json", p / "data" / "test.json"], "VLGuard test.json")
    data = read_json(meta_path, "VLGuard test.json")
    if not isinstance(data, list):
        raise DataError(f"{meta_path}: expected a JSON list of records")
    first = next((r.get("image") for r in data if isinstance(r, dict) and isinstance(r.get("image"), str)), None)
    img_root = _image_root(meta_path.parent, first)
    sink = Collector(on_error, check_images)
    for i, rec in enumerate(data):
        loc = f"{meta_path}[{i}]"
        if not isinstance(rec, dict):
            sink.bad(loc, f"expected an object, got {type(rec).__name__}")
            continue
        rid, image, safe, pairs = rec.get("id"), rec.get("image"), rec.get("safe"), rec.get("instr-resp")
        if not isinstance(rid, str) or not rid or not isinstance(image, str) or not isinstance(safe, bool) \
                or not isinstance(pairs, list) or not all(isinstance(x, dict) for x in pairs):
            sink.bad(loc, "record needs 'id' (string), 'image' (string), 'safe' (bool) and 'instr-resp' (list of objects)")
            continue
        loc = f"{meta_path}[{i}] (id {rid})"
        image_path = str((img_root / image).resolve())
        if safe:
            wanted = [(s, "unsafe_instruction" if s == "safe_unsafes" else "safe_instruction")
                      for s in subsets if s != "unsafes"]
            category = "safe_image"
        else:
            wanted = [("unsafes", "instruction")] if "unsafes" in subsets else []
            category = rec.get("harmful_category") or "unsafe_image"
        for subset, key in wanted:
            prompt = next((x[key] for x in pairs if isinstance(x.get(key), str)), None)
            if prompt is None or not prompt.strip():
                sink.bad(loc, f"no {key!r} in instr-resp")
                continue
            sink.add(
                loc,
                id=f"vlguard/{rid}/{subset}",
                prompt=prompt.strip(),
                image=image_path,
                label="benign" if subset == "safe_safes" else "harmful",
                category=category,
                source="vlguard",
                attack="image",
                meta={"group": f"vlguard/{rid}", "subset": subset, "image_safe": safe,
                      "harmful_subcategory": rec.get("harmful_subcategory")},
            )
    return sink.result()
