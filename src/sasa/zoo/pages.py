"""Typographic samples the organism can read: any request typed on a FigStep page.

The organism's reader knows one page layout, FigStep's (see ``sasa.zoo.reader``), so harmful and
benign requests used to fit and test detectors on it are typed the same way: the request becomes a
FigStep statement ("Steps to ...") followed by "1. 2. 3.", typed in FigStep's font (or the
project's, ``font=``), and the sample carries FigStep's prompt.
Each page sample shares ``meta['group']`` with its text sample, which the layer analysis uses as an
image/text pair.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from sasa.atomic import atomic_write_bytes
from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.data.render import png_bytes, to_statement
from sasa.data.sample import Sample
from sasa.zoo.reader import page_lines, page_text, render_page, training_fonts

log = logging.getLogger(__name__)


def page_for(text: str, steps: int = 3) -> list[str]:
    """The lines typed on a page for request ``text``."""
    return page_lines(to_statement(text) + "".join(f"\n{i}." for i in range(1, steps + 1)))


def _file_name(sample_id: str, font: str) -> str:
    digest = hashlib.sha256(f"{sample_id}\0{Path(font).name}".encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in sample_id)[:48]
    return f"{stem}-{digest}.png"


def page_samples(samples: Iterable[Sample], out_dir: str | os.PathLike, progress: bool = True,
                 font: str | None = None) -> list[Sample]:
    """One page sample per text sample (rendered once; existing files are reused)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    font = font or training_fonts()[0]
    result = []
    items = list(samples)
    for s in tqdm(items, desc="typing pages", disable=not progress or len(items) < 50):
        if s.image is not None:
            raise ValueError(f"sample {s.id!r} already has an image; pages are typed from text samples")
        lines = page_for(s.prompt)
        path = out / _file_name(s.id, font)
        if not path.is_file():
            atomic_write_bytes(path, png_bytes(render_page(lines, font)))
        meta = dict(s.meta, group=s.meta.get("group", s.id), rendered_text=page_text(lines), original_prompt=s.prompt)
        result.append(replace(s, id=f"{s.id}#page", prompt=FIGSTEP_PROMPT, image=str(path), attack="figstep-page",
                              meta=meta))
    return result
