"""Examples that show each kind of decision a run made, with the page the model saw as a thumbnail.

A reader trusts a table more after seeing one sample of each outcome: a harmful request the guard
refused, a benign one it (or the model) refused, a harmful request answered, and an answer the
judges read differently, with the phrase each judge went by.  Picked deterministically.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sasa.store.atomic import atomic_write_bytes

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


def _verdicts(r: Mapping[str, Any]) -> str:
    reasons = r.get("judge_reasons") or {}
    parts = []
    for name, refused in (r.get("verdicts") or {}).items():
        why = f" ({reasons[name]})" if name in reasons else ""
        parts.append(f"{name}: {'refused' if refused else 'answered'}{why}")
    return "; ".join(parts) if parts else ("guard refused" if r.get("decision") == "refuse" else "")


def _clip(text: Any, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _cells(ex: Mapping[str, Any]) -> list[str]:
    r = ex["record"]
    score = r.get("score")
    request = r.get("image_text") or r.get("prompt")
    return [ex["case"], str(r["mode"]), str(r.get("id")), "n/a" if score is None else f"{score:.3f}",
            _clip(request, 160), _clip(r.get("response"), 300), _verdicts(r)]


HEADER = ["case", "mode", "id", "score", "request (as the page shows it)", "response", "verdicts"]


def markdown_section(examples: Sequence[Mapping[str, Any]], out_dir: Path, thumbs: str = "thumbs") -> list[str]:
    """The section's Markdown lines; each thumbnail is written to ``out_dir/thumbs``."""
    if not examples:
        return []
    lines = ["| " + " | ".join(["page"] + HEADER) + " |", "|" + "---|" * (len(HEADER) + 1)]
    for k, ex in enumerate(examples):
        png = thumbnail_png(ex["record"].get("image"))
        cell = ""
        if png:
            atomic_write_bytes(out_dir / thumbs / f"example-{k}.png", png)
            cell = f"![{ex['case']}]({thumbs}/example-{k}.png)"
        cells = [c.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") for c in _cells(ex)]
        lines.append("| " + " | ".join([cell] + cells) + " |")
    return lines


def html_section(examples: Sequence[Mapping[str, Any]]) -> str:
    """The section's HTML table, thumbnails inlined as data URIs (the page stays self-contained)."""
    if not examples:
        return ""
    rows = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in ["page"] + HEADER)
            + "</tr></thead><tbody>"]
    for ex in examples:
        png = thumbnail_png(ex["record"].get("image"))
        img = (f'<img alt="{html.escape(ex["case"])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
               if png else "")
        rows.append("<tr><td>" + img + "</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(ex)) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)
