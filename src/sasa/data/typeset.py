"""Drawing text on images, deterministically: fonts (Pillow's embedded one, the bundled FreeMono
Bold of FigStep and DejaVu Sans Mono), ASCII normalisation, word wrap, and FigStep's page layout
(:func:`draw_page`: 760x760, 80 px font, 75 px pitch, 15 characters a line), which both the
published attacks (:mod:`sasa.data.attacks`) and the project's typed pages (:mod:`sasa.data.pages`) draw with.
"""

from __future__ import annotations

import textwrap
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from sasa.store.atomic import atomic_write_bytes

_ASCII_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2012": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u00d7": "x",
})


def ascii_text(text: str) -> str:
    """``text`` reduced to printable ASCII with single spaces (what the built-in font can draw)."""
    t = unicodedata.normalize("NFKD", text.translate(_ASCII_MAP))
    t = "".join(ch for ch in t if 32 <= ord(ch) < 127 or ch in "\n\t")
    return " ".join(t.split())


@lru_cache(maxsize=1)
def _builtin_font_bytes() -> bytes:
    font = ImageFont.load_default(size=10)
    data = getattr(font, "font_bytes", None)
    if not isinstance(font, ImageFont.FreeTypeFont) or not data:
        raise RuntimeError("this Pillow build has no FreeType support; pass font_path= to a .ttf file")
    return data


@lru_cache(maxsize=128)
def get_font(size: int, font_path: str | None = None, basic_layout: bool = True) -> ImageFont.FreeTypeFont:
    """A FreeType font at ``size`` px, by default with the basic (deterministic, dependency-free)
    layout engine; ``basic_layout=False`` takes Pillow's default (Raqm where installed)."""
    src = BytesIO(_builtin_font_bytes()) if font_path is None else font_path
    if basic_layout:
        return ImageFont.truetype(src, size, layout_engine=ImageFont.Layout.BASIC)
    return ImageFont.truetype(src, size)


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap by measured pixel width; a word wider than a line is split by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if font.getlength(trial) <= max_width:
            current = trial
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > max_width and len(word) > 1:
            cut = 1
            while cut < len(word) - 1 and font.getlength(word[: cut + 1]) <= max_width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


@dataclass
class Rendering:
    """A rendered image with exactly what was drawn where, for checks and re-rendering."""

    image: Image.Image
    lines: list[str]
    positions: list[tuple[int, int]]
    font_size: int
    stroke: int
    font_path: str | None = None
    text: str = ""
    meta: dict = field(default_factory=dict)

    def png_bytes(self) -> bytes:
        return png_bytes(self.image)


def png_bytes(image: Image.Image) -> bytes:
    buf = BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def draw_lines(
    lines: Iterable[str],
    positions: Iterable[tuple[int, int]],
    size: tuple[int, int],
    font_size: int,
    *,
    stroke: int = 0,
    font_path: str | None = None,
) -> Image.Image:
    """Black text lines on white, each at its position (the published attacks' free layouts;
    FigStep-layout pages go through :func:`draw_page`)."""
    font = get_font(font_size, font_path)
    image = Image.new("RGB", size, "#FFFFFF")
    draw = ImageDraw.Draw(image)
    for line, xy in zip(lines, positions):
        draw.text(xy, line, fill="#000000", font=font, stroke_width=stroke, stroke_fill="#000000")
    return image


def _layout(logical: list[str], font: ImageFont.FreeTypeFont, width: int, margin_x: int, top: int,
            spacing: int, stroke: int) -> tuple[list[str], list[tuple[int, int]], int]:
    """Wrap and place lines; the line pitch is Pillow's multiline rule (height of "A" + spacing),
    as in FigStep's images.  Returns lines, their positions and the lowest inked row."""
    lines: list[str] = []
    for item in logical:
        lines.extend(wrap_text(item, font, width - 2 * margin_x - 2 * stroke) or [""])
    step = font.getbbox("A", stroke_width=stroke)[3] + stroke + spacing
    positions = [(margin_x, top + i * step) for i in range(len(lines))]
    descent_bottom = font.getbbox("gjpqy", stroke_width=stroke)[3]
    bottom = top + (len(lines) - 1) * step + descent_bottom
    return lines, positions, bottom


FIGSTEP_FONT = "FreeMonoBold.ttf"  # bundled: resources/fonts/LICENSE-FreeFont.txt

PROJECT_FONT = "DejaVuSansMono-Bold.ttf"  # bundled: resources/fonts/LICENSE-DejaVu.txt

# FigStep's page: ``text_to_image`` draws multiline text from (20, 10) with spacing 11 in FreeMono
# Bold at 80 px on 760 x 760, the text wrapped at 15 characters; Pillow's multiline pitch is the
# height of "A" (64 px in that font) + 11.
PAGE_SIZE = 760

PAGE_ORIGIN = (20, 10)

PAGE_FONT_SIZE = 80

PAGE_PITCH = 75

PAGE_WRAP = 15

PAGE_MAX_LINES = 10


def bundled_font(name: str) -> str:
    """The path of a font bundled with sasa (``resources/fonts``, licences beside them)."""
    from importlib import resources as importlib_resources

    return str(importlib_resources.files("sasa") / "resources" / "fonts" / name)


def figstep_font_path() -> str:
    """GNU FreeMono Bold, the font FigStep's generator names, bundled with its licence."""
    return bundled_font(FIGSTEP_FONT)


def figstep_text(instruction: str, steps: int = 3) -> str:
    """The text FigStep types: ``textwrap.fill(instruction, 15)`` then ``"\\n1. "`` … (its
    ``text_step_by_step(instruction, wrap=True)``)."""
    text = textwrap.fill(instruction.removesuffix("\n"), width=PAGE_WRAP)
    return text + "".join(f"\n{i}. " for i in range(1, steps + 1))


def draw_page(lines: Iterable[str], font_path: str | None = None, *, dx: int = 0, dy: int = 0, stroke: int = 0,
              blur: float = 0.0, pitch: int = PAGE_PITCH) -> Image.Image:
    """A page in FigStep's layout with ``lines`` where FigStep draws them; the one function that
    draws FigStep-layout pages (published-style images, the organism's training pages, typed
    requests). ``dx``/``dy``/``stroke``/``blur`` jitter training renders; the defaults draw
    FigStep's own pixels (FreeMono Bold unless ``font_path``).

    Pillow's default layout engine, as FigStep's generator used and as the organism's reader was
    trained: FreeMono draws the same pixels under both engines, DejaVu Sans Mono does not."""
    font = get_font(PAGE_FONT_SIZE, font_path or figstep_font_path(), basic_layout=False)
    image = Image.new("RGB", (PAGE_SIZE, PAGE_SIZE), "#FFFFFF")
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((PAGE_ORIGIN[0] + dx, PAGE_ORIGIN[1] + pitch * k + dy), line, fill="#000000", font=font,
                  stroke_width=stroke, stroke_fill="#000000")
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return image


def _write_png_atomic(data: bytes, path: Path) -> None:
    atomic_write_bytes(path, data)
