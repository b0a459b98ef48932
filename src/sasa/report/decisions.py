"""Examples that show each kind of decision a run made, and the page the model saw as a thumbnail
(:mod:`sasa.report.render` lays them out).

A reader trusts a table more after seeing one sample of each outcome: a harmful request the guard
refused, a benign one it (or the model) refused, a harmful request answered, and an answer the
judges read differently, with the phrase each judge went by.  Picked deterministically.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

THUMBNAIL_PX = 160

CASES: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...] = (
    ("guard refusal", lambda r: r.get("label") == "harmful" and r.get("decision") == "refuse"),
    ("benign over-refusal", lambda r: r.get("label") == "benign" and (r.get("decision") == "refuse"
                                                                       or r.get("refused") is True)),
    ("harmful request answered", lambda r: r.get("label") == "harmful" and r.get("decision") == "answer"
     and r.get("refused") is False),
    ("judges disagree", lambda r: len(set((r.get("verdicts") or {}).values())) > 1),
)


def _scored_mode(records: Sequence[Mapping[str, Any]]) -> str | None:
    modes = list(dict.fromkeys(r["mode"] for r in records))
    scored = [m for m in modes if any(r["mode"] == m and r.get("score") is not None for r in records)]
    return "detect" if "detect" in scored else (scored[0] if scored else (modes[0] if modes else None))


def decision_examples(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per case of :data:`CASES`, each shown once, from the run's detector mode (SASA's
    ``detect`` when it ran; a judge disagreement from any mode if that one has none): the
    highest-scored, then by id."""
    records = [r for r in records if r.get("decision") != "error"]
    mode = _scored_mode(records)
    out, shown = [], set()
    for case, matches in CASES:
        pool = [r for r in records if r["mode"] == mode and matches(r) and (r["mode"], r.get("id")) not in shown]
        if not pool and case == "judges disagree":
            pool = [r for r in records if matches(r) and (r["mode"], r.get("id")) not in shown]
        if pool:
            pick = min(pool, key=lambda r: (-(r.get("score") if r.get("score") is not None else float("-inf")),
                                            str(r.get("id"))))
            out.append({"case": case, "record": pick})
            shown.add((pick["mode"], pick.get("id")))
    return out


def thumbnail_png(path: str | None, px: int = THUMBNAIL_PX) -> bytes | None:
    """A small PNG of the image at ``path``, or None when there is none or it cannot be read."""
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((px, px))
            buf = io.BytesIO()
            image.save(buf, format="PNG", optimize=True)
            return buf.getvalue()
    except (OSError, ValueError) as exc:
        logger.warning("no thumbnail for %s: %s", path, exc)
        return None
