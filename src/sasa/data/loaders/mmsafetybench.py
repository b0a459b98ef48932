"""MM-SafetyBench (Liu et al., ECCV 2024, arXiv 2311.17600): query-relevant image attacks.

Published layout (github.com/isXinLiu/MM-SafetyBench; images from its "MM-SafetyBench(imgs)"
archive)::

    data/processed_questions/<scenario>.json    13 files, e.g. 01-Illegal_Activitiy.json
    data/imgs/<scenario>/SD/<id>.jpg            Stable Diffusion image of the key phrase
    data/imgs/<scenario>/TYPO/<id>.jpg          the key phrase typed (typography)
    data/imgs/<scenario>/SD_TYPO/<id>.jpg       the SD image above the typography
    TinyVersion_ID_List.json                    the official tiny subset (repository root)

Each scenario JSON maps a question id (``"0"``, ``"1"``, ...) to an object with ``Question``,
``Changed Question``, ``Key Phrase``, ``Phrase Type``, ``Rephrased Question`` and
``Rephrased Question(SD)``.  The benchmark pairs ``SD`` images with ``Rephrased Question(SD)`` and
``TYPO`` / ``SD_TYPO`` images with ``Rephrased Question``; the text-only baseline asks the original
``Question``.  ``TinyVersion_ID_List.json`` is a list of ``{"Scenario": ..., "Sampled_ID_List": [...]}``.

The image folder may also be ``imgs/`` or ``MM-SafetyBench(imgs)/`` beside or above the questions.

Variants: ``sd_typo`` (default, the paper's main setting), ``sd``, ``typo``, ``images`` (all three),
``text``, ``all`` (three image kinds + text), and ``tiny-<any of those>`` for the official subset.
All samples are labelled harmful (scenarios 08-13 are the benchmark's policy-restricted advice
domains; ``meta["scenario"]`` keeps the distinction available).
"""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import (
    Collector,
    DataError,
    ImageCheck,
    LoadResult,
    OnError,
    find_first,
    parse_variant,
    read_json,
    text_field,
)

SCENARIOS = (
    "01-Illegal_Activitiy",
    "02-HateSpeech",
    "03-Malware_Generation",
    "04-Physical_Harm",
    "05-EconomicHarm",
    "06-Fraud",
    "07-Sex",
    "08-Political_Lobbying",
    "09-Privacy_Violence",
    "10-Legal_Opinion",
    "11-Financial_Advice",
    "12-Health_Consultation",
    "13-Gov_Decision",
)
# image kind -> (attack name, question field)
KINDS = {
    "SD": ("sd", "Rephrased Question(SD)"),
    "SD_TYPO": ("sd_typo", "Rephrased Question"),
    "TYPO": ("typo", "Rephrased Question"),
    "text": ("text", "Question"),
}
_BASE_VARIANTS = {
    "sd_typo": ["SD_TYPO"],
    "sd": ["SD"],
    "typo": ["TYPO"],
    "images": ["SD", "SD_TYPO", "TYPO"],
    "text": ["text"],
    "all": ["SD", "SD_TYPO", "TYPO", "text"],
}
VARIANTS = tuple(_BASE_VARIANTS) + tuple(f"tiny-{v}" for v in _BASE_VARIANTS)


def _tiny_ids(path: Path, sink: Collector) -> dict[str, set[str]]:
    data = read_json(path, "MM-SafetyBench TinyVersion_ID_List.json")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{Scenario, Sampled_ID_List}} objects")
    out: dict[str, set[str]] = {}
    for i, item in enumerate(data):
        loc = f"{path}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("Scenario"), str) \
                or not isinstance(item.get("Sampled_ID_List"), list):
            sink.bad(loc, "expected an object with 'Scenario' (string) and 'Sampled_ID_List' (list)")
            continue
        out[item["Scenario"]] = {str(x) for x in item["Sampled_ID_List"]}
    return out


def load_mmsafetybench(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load MM-SafetyBench from a checkout of its repository (or its ``data/`` folder)."""
    v = parse_variant(variant, VARIANTS, "sd_typo", "mmsafetybench")
    tiny = v.startswith("tiny-")
    kinds = _BASE_VARIANTS[v.removeprefix("tiny-")]
    root = Path(path)
    qdir = find_first([root / "processed_questions", root / "data" / "processed_questions"],
                      "MM-SafetyBench processed_questions/ folder", is_dir=True)
    sink = Collector(on_error, check_images)
    img_root = None
    if any(k != "text" for k in kinds):
        bases = [qdir.parent, qdir.parent.parent, root]
        img_root = find_first([b / name for b in bases for name in ("imgs", "MM-SafetyBench(imgs)")],
                              "MM-SafetyBench image folder (imgs/)", is_dir=True)
    tiny_ids = None
    if tiny:
        tiny_path = find_first([b / "TinyVersion_ID_List.json" for b in (root, qdir.parent, qdir.parent.parent)],
                               "MM-SafetyBench TinyVersion_ID_List.json")
        tiny_ids = _tiny_ids(tiny_path, sink)
    for scenario in SCENARIOS:
        qfile = qdir / f"{scenario}.json"
        if not qfile.is_file():
            sink.bad(str(qfile), "scenario question file missing")
            continue
        data = read_json(qfile, "MM-SafetyBench question file")
        if not isinstance(data, dict):
            raise DataError(f"{qfile}: expected a JSON object mapping question ids to questions")
        wanted = None if tiny_ids is None else tiny_ids.get(scenario, set())
        category = scenario.split("-", 1)[1]
        for qid, item in data.items():
            if wanted is not None and str(qid) not in wanted:
                continue
            loc = f"{qfile}[{qid!r}]"
            if not isinstance(item, dict):
                sink.bad(loc, f"expected an object, got {type(item).__name__}")
                continue
            group = f"mmsafetybench/{scenario}/{qid}"
            meta = {"group": group, "scenario": scenario, "question_id": str(qid),
                    "key_phrase": item.get("Key Phrase"), "phrase_type": item.get("Phrase Type"),
                    "question": item.get("Question"), "tiny": tiny}
            for kind in kinds:
                attack, field_name = KINDS[kind]
                try:
                    prompt = text_field(item, field_name)
                except ValueError as exc:
                    sink.bad(loc, str(exc))
                    continue
                image = None if kind == "text" else str((img_root / scenario / kind / f"{qid}.jpg").resolve())
                sink.add(loc, id=f"{group}/{attack}", prompt=prompt, image=image, label="harmful",
                         category=category, source="mmsafetybench", attack=attack, meta=dict(meta))
    return sink.result()
