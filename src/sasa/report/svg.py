"""Small hand-written SVG charts (lines, overlaid histograms, grouped bars with error bars).

Written out by hand so reports need no plotting library and embed as plain text in HTML.
"""

from __future__ import annotations

import math
from typing import Sequence
from xml.sax.saxutils import escape

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#000000")

_MARGIN = {"left": 56, "right": 16, "top": 34, "bottom": 46}


def _esc(text: object) -> str:
    return escape(str(text), {'"': "&quot;"})


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _tick_label(v: float) -> str:
    return f"{v:.3g}"


class _Frame:
    """Maps data coordinates to pixels and draws axes, grid, title and legend."""

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float],
                 legend_above: bool = False):
        self.w, self.h = width, height
        self.x0, self.x1 = _MARGIN["left"], width - _MARGIN["right"]
        self.y0, self.y1 = height - _MARGIN["bottom"], _MARGIN["top"] + (20 if legend_above else 0)
        self.xlim, self.ylim = xlim, ylim

    def px(self, x: float) -> float:
        lo, hi = self.xlim
        return self.x0 + (x - lo) / (hi - lo) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        lo, hi = self.ylim
        return self.y0 - (y - lo) / (hi - lo) * (self.y0 - self.y1)

    def open(self, title: str, desc: str) -> list[str]:
        return [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" role="img" font-family="sans-serif" font-size="11">',
            f"<title>{_esc(title)}</title><desc>{_esc(desc)}</desc>",
            f'<rect x="0" y="0" width="{self.w}" height="{self.h}" fill="#ffffff"/>',
            f'<text x="{self.w / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{_esc(title)}</text>',
        ]

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[float], yticks: Sequence[float],
             xtick_labels: Sequence[str] | None = None) -> list[str]:
        out = []
        for v in yticks:
            y = self.py(v)
            out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(_tick_label(v))}</text>')
        for i, v in enumerate(xticks):
            x = self.px(v)
            label = xtick_labels[i] if xtick_labels is not None else _tick_label(v)
            out.append(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" stroke="#333"/>')
            out.append(f'<text x="{x:.1f}" y="{self.y0 + 16}" text-anchor="middle">{_esc(label)}</text>')
        out.append(
            f'<path d="M{self.x0},{self.y1} V{self.y0} H{self.x1}" fill="none" stroke="#333"/>'
        )
        out.append(
            f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.h - 8}" text-anchor="middle">{_esc(xlabel)}</text>'
        )
        cy = (self.y0 + self.y1) / 2
        out.append(
            f'<text x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">{_esc(ylabel)}</text>'
        )
        return out

    def legend(self, labels: Sequence[str], colors: Sequence[str], anchor: str = "top-left") -> list[str]:
        out = []
        if anchor == "above":  # one row between title and plot, so it never hides data
            x = float(self.x0)
            for label, color in zip(labels, colors):
                out.append(f'<rect x="{x:.1f}" y="{self.y1 - 20}" width="10" height="10" fill="{color}"/>')
                out.append(f'<text x="{x + 14:.1f}" y="{self.y1 - 11}">{_esc(label)}</text>')
                x += 28 + 6.2 * len(label)
            return out
        row = 15
        x = self.x0 + 10 if anchor.endswith("left") else self.x1 - 170
        y = (self.y1 + 8) if anchor.startswith("top") else (self.y0 - 10 - row * len(labels))
        for i, (label, color) in enumerate(zip(labels, colors)):
            yy = y + i * row
            out.append(f'<rect x="{x}" y="{yy:.1f}" width="10" height="10" fill="{color}"/>')
            out.append(f'<text x="{x + 14}" y="{yy + 9:.1f}">{_esc(label)}</text>')
        return out


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
    width: int = 440,
    height: int = 360,
) -> str:
    """One polyline per (label, xs, ys) series; ``diagonal`` adds the chance line of a ROC plot."""
    fr = _Frame(width, height, xlim, ylim)
    out = fr.open(title, f"line chart: {', '.join(s[0] for s in series)}")
    out += fr.axes(xlabel, ylabel, nice_ticks(*xlim), nice_ticks(*ylim))
    if diagonal:
        out.append(
            f'<line x1="{fr.px(xlim[0]):.1f}" y1="{fr.py(ylim[0]):.1f}" x2="{fr.px(xlim[1]):.1f}" '
            f'y2="{fr.py(ylim[1]):.1f}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    colors = []
    for i, (label, xs, ys) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        colors.append(color)
        pts = " ".join(f"{fr.px(x):.1f},{fr.py(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"><title>{_esc(label)}</title></polyline>')
    out += fr.legend([s[0] for s in series], colors, anchor="bottom-right")
    out.append("</svg>")
    return "\n".join(out)


def histogram(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    bins: int = 20,
    width: int = 440,
    height: int = 300,
) -> str:
    """Overlaid histograms on shared bins, each normalised to its own group size.

    Normalising makes a small harmful set and a large benign set comparable by shape.
    """
    finite = [float(v) for _, vals in groups for v in vals if math.isfinite(float(v))]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    shares = []
    for _, vals in groups:
        vals = [min(max(float(v), lo), hi) for v in vals if not math.isnan(float(v))]
        counts = [0] * bins
        for v in vals:
            counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
        n = max(len(vals), 1)
        shares.append([c / n for c in counts])
    ymax = max((max(s) for s in shares if s), default=1.0) or 1.0
    yticks = nice_ticks(0.0, ymax)
    ytop = max(yticks[-1] if yticks else ymax, ymax)
    fr = _Frame(width, height, (lo, hi), (0.0, ytop), legend_above=True)
    out = fr.open(title, f"histogram: {', '.join(g[0] for g in groups)}")
    out += fr.axes(xlabel, "share of samples", nice_ticks(lo, hi), yticks)
    colors = []
    for gi, ((label, _), share) in enumerate(zip(groups, shares)):
        color = PALETTE[gi % len(PALETTE)]
        colors.append(color)
        for i, v in enumerate(share):
            if v <= 0:
                continue
            x, x2 = fr.px(edges[i]), fr.px(edges[i + 1])
            y = fr.py(v)
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(x2 - x - 0.5, 0.5):.1f}" height="{fr.y0 - y:.1f}" '
                f'fill="{color}" fill-opacity="0.45" stroke="{color}" stroke-width="0.8"/>'
            )
    out += fr.legend([f"{g[0]} (n={len(g[1])})" for g in groups], colors, anchor="above")
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    categories: Sequence[str],
    series: Sequence[dict],
    *,
    title: str,
    ylabel: str,
    ymax: float = 1.0,
    width: int | None = None,
    height: int = 320,
) -> str:
    """Grouped bars: one group per category, one bar per series.

    Each series is ``{"label", "values", "lows"?, "highs"?}``; ``None`` values draw no bar,
    lows/highs draw error bars (the bootstrap CI).
    """
    n_cat, n_ser = len(categories), max(len(series), 1)
    width = width or max(360, 90 + n_cat * (28 * n_ser + 24))
    fr = _Frame(width, height, (0.0, float(max(n_cat, 1))), (0.0, ymax), legend_above=True)
    out = fr.open(title, f"bar chart: {', '.join(s['label'] for s in series)}")
    out += fr.axes("", ylabel, [i + 0.5 for i in range(n_cat)], nice_ticks(0.0, ymax), list(categories))
    group_w = (fr.x1 - fr.x0) / max(n_cat, 1)
    bar_w = min(28.0, group_w * 0.8 / n_ser)
    colors = []
    for si, s in enumerate(series):
        color = PALETTE[si % len(PALETTE)]
        colors.append(color)
        lows, highs = s.get("lows"), s.get("highs")
        for ci, v in enumerate(s["values"]):
            if v is None or not math.isfinite(v):
                continue
            cx = fr.x0 + group_w * (ci + 0.5) + (si - (n_ser - 1) / 2) * bar_w
            y = fr.py(min(v, ymax))
            out.append(
                f'<rect x="{cx - bar_w / 2 + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{fr.y0 - y:.1f}" '
                f'fill="{color}"><title>{_esc(s["label"])} {_esc(categories[ci])}: {v:.3f}</title></rect>'
            )
            if lows is not None and highs is not None and lows[ci] is not None and highs[ci] is not None:
                ylo, yhi = fr.py(min(lows[ci], ymax)), fr.py(min(highs[ci], ymax))
                out.append(
                    f'<path d="M{cx:.1f},{ylo:.1f} V{yhi:.1f} M{cx - 4:.1f},{ylo:.1f} H{cx + 4:.1f} '
                    f'M{cx - 4:.1f},{yhi:.1f} H{cx + 4:.1f}" stroke="#222" fill="none"/>'
                )
    out += fr.legend([s["label"] for s in series], colors, anchor="above")
    out.append("</svg>")
    return "\n".join(out)


def heat_map(grid: Sequence[Sequence[float | None]], rows: Sequence[object], cols: Sequence[object], *, title: str,
             xlabel: str, ylabel: str, marks: dict[str, tuple[int, int]] | None = None, lo: float = 0.5,
             hi: float = 1.0, cell: int = 34) -> str:
    """A grid of coloured cells (value ``grid[i][j]`` at row ``rows[i]``, column ``cols[j]``; None
    blank), the value written in each, and ``marks`` ({label: (i, j)}) outlined."""
    left, top = 64, 40
    width, height = left + cell * len(cols) + 150, top + cell * len(rows) + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<text x="{left}" y="18" font-size="13">{_esc(title)}</text>']

    def colour(v: float) -> str:
        t = min(1.0, max(0.0, (v - lo) / (hi - lo) if hi > lo else 0.0))
        r, g, b = (round(247 + (8 - 247) * t), round(251 + (48 - 251) * t), round(255 + (107 - 255) * t))
        return f"rgb({r},{g},{b})"

    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v is None or not math.isfinite(v):
                continue
            x, y = left + j * cell, top + i * cell
            ink = "#ffffff" if (v - lo) / max(hi - lo, 1e-9) > 0.6 else "#000000"
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour(v)}" stroke="#ffffff"/>')
            out.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" fill="{ink}" '
                       f'font-size="9">{v:.2f}</text>')
    for j, c in enumerate(cols):
        out.append(f'<text x="{left + j * cell + cell / 2}" y="{top + cell * len(rows) + 14}" '
                   f'text-anchor="middle">{_esc(c)}</text>')
    for i, r in enumerate(rows):
        out.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">{_esc(r)}</text>')
    out.append(f'<text x="{left + cell * len(cols) / 2}" y="{height - 12}" text-anchor="middle">{_esc(xlabel)}</text>')
    out.append(f'<text x="14" y="{top + cell * len(rows) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + cell * len(rows) / 2})">{_esc(ylabel)}</text>')
    for k, (label, (i, j)) in enumerate((marks or {}).items()):
        colour_k = PALETTE[(k + 1) % len(PALETTE)]
        out.append(f'<rect x="{left + j * cell + 1.5}" y="{top + i * cell + 1.5}" width="{cell - 3}" '
                   f'height="{cell - 3}" fill="none" stroke="{colour_k}" stroke-width="3"/>')
        lx, ly = left + cell * len(cols) + 12, top + 12 + 18 * k
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="12" height="12" fill="none" stroke="{colour_k}" '
                   f'stroke-width="3"/><text x="{lx + 18}" y="{ly + 1}">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
