"""MOSSBench (Li et al., 2024, arXiv 2406.17806): benign image-text queries that trigger refusals.

Published layout (github.com/xirui-li/MOSSBench; images from ``images.zip`` on the Hugging Face
mirror, unzipped into ``data/``)::

    data/images_information/information.json             300 benign queries
    data/images/<pid>.<ext>
    data_contrast/images_information/information.json    harmful contrast queries on the same images
    data_contrast/images/<pid>.<ext>

``information.json`` maps a problem id to ``{"image": "images/<pid>.png", "question": ...,
"short description": ..., "pid": ..., "metadata": {"over": "type 1" | "type 2" | "type 3", ...}}``
where the type is the oversensitivity stimulus: 1 Exaggerated Risk, 2 Negated Harm,
3 Counterintuitive Interpretation.  ``image`` is relative to the folder holding
``images_information/``.  The repository holds some images as ``.webp`` while the records say
``.png``; when the named file is absent a file with the same stem and another image extension is
used.

The benign queries are labelled benign (over-refusal evaluation); the contrast queries harmful.
Variants: ``benign`` (default), ``contrast``, ``all``.  ``path`` may be the repository root or the
``data`` folder itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, DataError, ImageCheck, LoadResult, OnError, find_first, parse_variant, read_json

VARIANTS = ("benign", "contrast", "all")
STIMULI = {"type 1": "exaggerated_risk", "type 2": "negated_harm", "type 3": "counterintuitive_interpretation"}
_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def _resolve_image(base: Path, rel: str) -> Path:
    p = base / rel
    if p.is_file():
        return p
    for ext in _EXTS:
        alt = p.with_suffix(ext)
        if alt.is_file():
            return alt
    return p


def _load_part(root: Path, part: str, sink: Collector) -> None:
    folder = "data" if part == "benign" else "data_contrast"
    info = find_first(
        [root / folder / "images_information" / "information.json"]
        + ([root / "images_information" / "information.json"] if part == "benign" else []),
        f"MOSSBench {folder}/images_information/information.json",
    )
    base = info.parent.parent
    data = read_json(info, "MOSSBench information.json")
    if not isinstance(data, dict):
        raise DataError(f"{info}: expected a JSON object mapping problem ids to records")
    for key, rec in data.items():
        loc = f"{info}[{key!r}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) \
                or not isinstance(rec.get("image"), str):
            sink.bad(loc, "record needs 'question' and 'image' strings")
            continue
        md = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        over = str(md.get("over", "")).strip().lower()
        stimulus = STIMULI.get(over)
        if stimulus is None:
            sink.bad(loc, f"unknown oversensitivity type {md.get('over')!r} (expected {sorted(STIMULI)})")
            continue
        pid = str(rec.get("pid", key))
        meta = {"group": f"mossbench/{pid}", "pid": pid, "stimulus": stimulus,
                "short_description": rec.get("short description")}
        meta.update({k: md[k] for k in ("human", "child", "syn", "ocr", "harm") if k in md})
        sink.add(
            loc,
            id=f"mossbench/{pid}/{part}",
            prompt=rec["question"].strip(),
            image=str(_resolve_image(base, rec["image"]).resolve()),
            label="benign" if part == "benign" else "harmful",
            category=stimulus,
            source="mossbench",
            attack="image",
            meta=meta,
        )


def load_mossbench(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load MOSSBench benign queries (and/or the harmful contrast set) with their images."""
    v = parse_variant(variant, VARIANTS, "benign", "mossbench")
    root = Path(path)
    sink = Collector(on_error, check_images)
    for part in (["benign", "contrast"] if v == "all" else [v]):
        _load_part(root, part, sink)
    return sink.result()
