"""Requests typed on pages in FigStep's layout: how a text request becomes the image of itself
(:func:`page_samples`), for the demo's test pages, the organism's training pages and typed
benchmark prompts.  The published attacks' own renderings are in :mod:`sasa.data.attacks`.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from tqdm import tqdm

from sasa.data.attacks import statement_phrase, to_statement
from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.data.sample import Sample
from sasa.data.typeset import (
    PAGE_MAX_LINES,
    PAGE_WRAP,
    draw_page,
    figstep_font_path,
    png_bytes,
)
from sasa.store.atomic import atomic_write_bytes


def page_lines(text: str) -> list[str]:
    """FigStep's line breaking: ``textwrap`` at 15 characters, explicit newlines kept, at most the
    10 lines a page holds."""
    lines: list[str] = []
    for part in text.split("\n"):
        lines.extend(textwrap.wrap(part, PAGE_WRAP) or [""])
    return lines[:PAGE_MAX_LINES]


def page_text(lines: list[str]) -> str:
    """What a page says, as a language model should read it: its lines joined by spaces."""
    return " ".join(line.strip() for line in lines if line.strip())


def page_text_prompt(text: str) -> str:
    """A page's words as text, then FigStep's prompt: the page's text twin, which asks the same in
    the same form without the image."""
    return text + "\n" + FIGSTEP_PROMPT


def text_twins(pages: Iterable[Sample]) -> list[Sample]:
    """The text twin of each page made by :func:`page_samples`: id ``<id>#statement``, no image."""
    return [replace(p, id=p.id.removesuffix("#page") + "#statement", prompt=page_text_prompt(p.meta["rendered_text"]),
                    image=None, attack="figstep-statement") for p in pages]


def statement_page_lines(text: str, steps: int = 3, statement: str | None = None) -> list[str]:
    """The lines of the page for request ``text``: its statement (``statement`` if given, else
    :func:`~sasa.data.attacks.to_statement`'s), then ``1.`` .. ``steps.``."""
    return page_lines((statement or to_statement(text)) + "".join(f"\n{i}." for i in range(1, steps + 1)))


_VERB_STATEMENT = re.compile(r"^(?:steps|methods|ways)\s+to\s+(?P<x>.+)$", re.I)
_LIST_STATEMENT = re.compile(r"^list\s+of\s+", re.I)
LIST_HEAD = "List of points on:"
"""Every list-share page's head, a list's and a verb phrase's alike, so no word of it tells them apart."""
VERB_OPENINGS = (("Steps to", 2), ("Methods to", 1))
"""How a verb-phrase request not needed under "List of ways to" is headed, in these proportions."""


def placeable(text: str) -> bool:
    """Whether :func:`balanced_statements` can place the request: its statement is a verb phrase
    ("Steps to ...", which any opening can head) or a list ("List of ...")."""
    st = to_statement(text)
    return bool(_VERB_STATEMENT.match(st) or _LIST_STATEMENT.match(st))


def balanced_statements(samples: Iterable[Sample], seed: int = 0) -> dict[str, str]:
    """Page statements whose openings are spread alike under each label, so a detector cannot tell
    harmful from benign pages by their first words (FigStep's own statements open "Steps to" for
    most harmful requests and "List of" for most benign ones).

    A request whose statement is a list is headed :data:`LIST_HEAD`; verb-phrase ones fill each
    label's list share up to the largest share any label has (":data:`LIST_HEAD` how to ..."), and
    the rest open "Steps to" / "Methods to" in :data:`VERB_OPENINGS`' proportions, chosen by a
    seeded shuffle.  Every request must be :func:`placeable`."""
    by_label: dict[str, list[tuple[Sample, str, re.Match | None]]] = {}
    for s in samples:
        st = to_statement(s.prompt)
        verb = _VERB_STATEMENT.match(st)
        if not verb and not _LIST_STATEMENT.match(st):
            raise ValueError(f"sample {s.id!r}: its statement {st!r} is neither a verb phrase nor a list; "
                             "keep only placeable() requests")
        by_label.setdefault(s.label, []).append((s, st, verb))
    list_share = max((sum(v is None for _, _, v in items) / len(items) for items in by_label.values()), default=0.0)
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for label in sorted(by_label):
        items = by_label[label]
        verbs = sorted((i for i in items if i[2] is not None), key=lambda i: i[0].id)
        rng.shuffle(verbs)
        lists = math.ceil(list_share * len(items) - 1e-9) - (len(items) - len(verbs))
        for s, st, verb in items:
            if verb is None:
                out[s.id] = f"{LIST_HEAD} {statement_phrase(st)}."
        for s, _, verb in verbs[:lists]:
            out[s.id] = f"{LIST_HEAD} how to {verb['x']}"
        rest = verbs[lists:]
        total = sum(w for _, w in VERB_OPENINGS)
        start = 0
        for k, (head, weight) in enumerate(VERB_OPENINGS):
            end = len(rest) if k == len(VERB_OPENINGS) - 1 else start + round(len(rest) * weight / total)
            for s, _, verb in rest[start:end]:
                out[s.id] = f"{head} {verb['x']}"
            start = end
    return out


def _page_file_name(sample_id: str, font: str, text: str = "") -> str:
    digest = hashlib.sha256(f"{sample_id}\0{Path(font).name}\0{text}".encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in sample_id)[:48]
    return f"{stem}-{digest}.png"


def page_samples(samples: Iterable[Sample], out_dir: str | os.PathLike, progress: bool = True,
                 font: str | None = None, statements: Mapping[str, str] | None = None) -> list[Sample]:
    """Each text sample's request typed on a FigStep page (:func:`statement_page_lines`, :func:`draw_page`)
    with FigStep's prompt: id ``<id>#page``, attack ``figstep-page``, ``meta['group']`` shared with the
    text sample (the layer analysis pairs them). ``statements`` (by sample id, e.g.
    :func:`balanced_statements`) replaces the rule's statement. Rendered once; existing files are reused.

    Unlike :func:`render_samples` (which fits any text to the canvas in any font), every page has
    FigStep's exact layout, the one a reader trained on FigStep's pages can read.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    font = font or figstep_font_path()
    result = []
    items = list(samples)
    for s in tqdm(items, desc="typing pages", disable=not progress or len(items) < 50):
        if s.image is not None:
            raise ValueError(f"sample {s.id!r} already has an image; pages are typed from text samples")
        lines = statement_page_lines(s.prompt, statement=(statements or {}).get(s.id))
        path = out / _page_file_name(s.id, font, "\n".join(lines))
        if not path.is_file():
            atomic_write_bytes(path, png_bytes(draw_page(lines, font)))
        meta = dict(s.meta, group=s.meta.get("group", s.id), rendered_text=page_text(lines), original_prompt=s.prompt)
        result.append(replace(s, id=f"{s.id}#page", prompt=FIGSTEP_PROMPT, image=str(path), attack="figstep-page",
                              meta=meta))
    return result
