"""Requests typed on pages in FigStep's layout: how a text request becomes the image of itself
(:func:`page_samples`), for the demo's test pages, the organism's training pages and typed
benchmark prompts.  The published attacks' own renderings are in :mod:`sasa.data.attacks`.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from sasa.data.attacks import to_statement
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


def statement_page_lines(text: str, steps: int = 3) -> list[str]:
    """The lines of the page for request ``text``: its statement, then ``1.`` .. ``steps.``."""
    return page_lines(to_statement(text) + "".join(f"\n{i}." for i in range(1, steps + 1)))


def _page_file_name(sample_id: str, font: str) -> str:
    digest = hashlib.sha256(f"{sample_id}\0{Path(font).name}".encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in sample_id)[:48]
    return f"{stem}-{digest}.png"


def page_samples(samples: Iterable[Sample], out_dir: str | os.PathLike, progress: bool = True,
                 font: str | None = None) -> list[Sample]:
    """Each text sample's request typed on a FigStep page (:func:`statement_page_lines`, :func:`draw_page`)
    with FigStep's prompt: id ``<id>#page``, attack ``figstep-page``, ``meta['group']`` shared with the
    text sample (the layer analysis pairs them). Rendered once; existing files are reused.

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
        lines = statement_page_lines(s.prompt)
        path = out / _page_file_name(s.id, font)
        if not path.is_file():
            atomic_write_bytes(path, png_bytes(draw_page(lines, font)))
        meta = dict(s.meta, group=s.meta.get("group", s.id), rendered_text=page_text(lines), original_prompt=s.prompt)
        result.append(replace(s, id=f"{s.id}#page", prompt=FIGSTEP_PROMPT, image=str(path), attack="figstep-page",
                              meta=meta))
    return result
