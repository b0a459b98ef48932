"""Write an analysis as ``curves.json``, ``plots/*.png`` + ``plots/*.svg`` and ``analysis.html``.

PNG charts are rasterised directly with Pillow (no plotting library is a dependency); the same
charts as SVG (:mod:`sasa.report.svg`) are inlined in ``analysis.html``, which has no scripts or
external assets. :func:`analysis_section_html` returns the page's body as one ``<section>`` for
embedding in another HTML report. Every file is written atomically.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image, ImageDraw

from sasa.data.typeset import get_font
from sasa.store.atomic import atomic_path, atomic_write_json, atomic_write_text
from sasa.report import svg

logger = logging.getLogger(__name__)

Series = tuple[str, Sequence[float], Sequence[float]]


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None, recursively, so the JSON is standard (and numpy scalars become numbers)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v is not None and math.isfinite(v)


def _points(xs: Sequence[float], ys: Sequence[Any]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zip(xs, ys) if _finite(y)]


def _limits(series: Sequence[Series], ylim: tuple[float, float] | None) -> tuple[float, float]:
    if ylim is not None:
        return ylim
    vals = [y for _, xs, ys in series for _, y in _points(xs, ys)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 0.5
    return lo - pad, hi + pad


# --- PNG ------------------------------------------------------------------------------------------


def png_line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float],
    ylim: tuple[float, float] | None = None,
    markers: Mapping[str, float] | None = None,
    width: int = 720,
    height: int = 420,
) -> Image.Image:
    """A line chart as a Pillow image: one polyline per (label, xs, ys); NaN points are skipped.

    ``markers``: label -> x, drawn as dashed vertical lines (the chosen s and f).
    """
    ylim = _limits(series, ylim)
    img = Image.new("RGB", (width, height), "#ffffff")
    draw = ImageDraw.Draw(img)
    font, tfont = get_font(12), get_font(15)
    x0, x1, y0, y1 = 66, width - 18, height - 50, 62
    (xa, xb), (ya, yb) = xlim, ylim
    if xb <= xa:
        xb = xa + 1
    if yb <= ya:
        yb = ya + 1

    def px(x: float) -> float:
        return x0 + (x - xa) / (xb - xa) * (x1 - x0)

    def py(y: float) -> float:
        return y0 - (y - ya) / (yb - ya) * (y0 - y1)

    tw = draw.textlength(title, font=tfont)
    draw.text(((width - tw) / 2, 8), title, fill="#000000", font=tfont)
    for v in svg.nice_ticks(ya, yb):
        y = py(v)
        draw.line([(x0, y), (x1, y)], fill="#e5e5e5")
        label = f"{v:.3g}"
        draw.text((x0 - 6 - draw.textlength(label, font=font), y - 7), label, fill="#333333", font=font)
    for v in svg.nice_ticks(xa, xb):
        if v != int(v):
            continue
        x = px(v)
        draw.line([(x, y0), (x, y0 + 4)], fill="#333333")
        label = f"{int(v)}"
        draw.text((x - draw.textlength(label, font=font) / 2, y0 + 6), label, fill="#333333", font=font)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="#333333")
    draw.text(((x0 + x1) / 2 - draw.textlength(xlabel, font=font) / 2, height - 22), xlabel, fill="#000000", font=font)
    lab = Image.new("RGB", (int(draw.textlength(ylabel, font=font)) + 4, 16), "#ffffff")
    ImageDraw.Draw(lab).text((2, 1), ylabel, fill="#000000", font=font)
    lab = lab.rotate(90, expand=True)
    img.paste(lab, (4, int((y0 + y1) / 2 - lab.height / 2)))
    for name, x in (markers or {}).items():
        xp = px(x)
        for yy in range(int(y1), int(y0), 8):
            draw.line([(xp, yy), (xp, min(yy + 4, y0))], fill="#666666", width=1)
        tw = draw.textlength(name, font=font)
        draw.text((xp + 3 if xp + 3 + tw < x1 else xp - 3 - tw, y1 + 2), name, fill="#444444", font=font)
    legend_x = x0
    for i, (name, xs, ys) in enumerate(series):
        color = svg.PALETTE[i % len(svg.PALETTE)]
        pts = [(px(x), py(y)) for x, y in _points(xs, ys)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2, joint="curve")
        for x, y in pts:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=color)
        draw.rectangle([legend_x, 34, legend_x + 10, 44], fill=color)
        draw.text((legend_x + 14, 32), name, fill="#000000", font=font)
        legend_x += 28 + draw.textlength(name, font=font)
    return img


def _write_png(img: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _svg_chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, xlim: tuple[float, float],
               ylim: tuple[float, float] | None, markers: Mapping[str, float]) -> str:
    ylim = _limits(series, ylim)
    clean = [(name, [x for x, _ in _points(xs, ys)], [y for _, y in _points(xs, ys)]) for name, xs, ys in series]
    clean += [(name, [x, x], list(ylim)) for name, x in markers.items()]
    return svg.line_chart(clean, title=title, xlabel=xlabel, ylabel=ylabel, xlim=xlim, ylim=ylim, width=520,
                          height=340)


# --- charts of an analysis ------------------------------------------------------------------------


def chart_specs(result: Mapping[str, Any]) -> dict[str, dict]:
    """name -> chart (series, labels, limits, caption) for every curve the analysis measured."""
    import numpy as np

    L = int(result["num_layers"])
    xs = list(range(L))
    sel = result["selection"]
    markers = {f"s={sel['safety']}": sel["safety"], f"f={sel['fused']}": sel["fused"]}
    c = result["curves"]
    specs: dict[str, dict] = {}

    def add(name: str, title: str, ylabel: str, series: list, caption: str, ylim: tuple | None = None) -> None:
        specs[name] = {"title": title, "ylabel": ylabel, "series": [(n, xs, v) for n, v in series],
                       "caption": caption, "ylim": ylim, "xlabel": "decoder block (0-based)",
                       "xlim": (0.0, float(max(L - 1, 1))), "markers": markers}

    sp = c.get("safety")
    if sp:
        add("safety_probe", "Safety perception: harmful vs benign probe", "score",
            [("AUROC", sp["auroc"]), ("accuracy", sp["accuracy"])],
            "Cross-validated linear-probe AUROC and accuracy at the last prompt token.", (0.4, 1.02))
        add("safety_dprime", "Safety perception: held-out separation d'", "d'", [("d'", sp["dprime"])],
            "(mean harmful - mean benign) / pooled std of out-of-fold probe scores; does not saturate like AUROC.")
    hd = c.get("heads")
    if hd:
        def rowmax(a: Any) -> list[float]:
            return [float(np.nanmax(r)) if np.isfinite(r).any() else math.nan for r in np.asarray(a, float)]

        add("heads", "Attention heads: ablation importance", "degrees",
            [("max safety-specific", hd["layer_score"]), ("max safety angle", rowmax(hd["angle_safety"])),
             ("max utility angle", rowmax(hd["angle_utility"]))],
            "Per block, over its ablated heads: principal angle of the final block's leading direction on harmful "
            "(safety) and benign (utility) prompts, and their difference.")
    sem = c.get("semantic") or {}
    series = []
    if sem.get("readability") is not None:
        series.append(("logit-lens readability", sem["readability"]))
    cat = sem.get("category")
    if cat:
        series += [("category accuracy", cat["accuracy"]), ("category chance", [cat["chance"]] * L)]
    if series:
        add("semantic", "Semantic understanding", "share", series,
            "Share of readable words among the logit lens's top-k tokens; cross-validated category-probe accuracy "
            "and its chance level.", (0.0, 1.02))
    cm = sem.get("crossmodal")
    if cm:
        add("crossmodal", "Cross-modal agreement (image of a text vs the text)", "cosine",
            [("matched", cm["cosine"]), ("mismatched", cm["cosine_mismatched"]), ("agreement", cm["agreement"])],
            "Cosine between the last-token state for an image carrying a text and for the same text given as "
            "text, against mismatched pairs; agreement = matched - mismatched.")
    al = c.get("alignment")
    if al:
        add("refusal", "Alignment: refusal tokens (logit lens)", "probability",
            [("harmful", al["prob_harmful"]), ("benign", al["prob_benign"]), ("gap", al["gap"])],
            "Mean logit-lens probability of the refusal tokens on harmful and benign prompts, and the gap.")

        def log10(v: Sequence[Any]) -> list[float]:
            return [math.log10(x) if _finite(x) and x > 0 else math.nan for x in v]

        add("refusal_rank", "Alignment: best refusal-token rank", "log10 median rank",
            [("harmful", log10(al["rank_harmful"])), ("benign", log10(al["rank_benign"]))],
            "Median over samples of the best (lowest) rank of a refusal token; 0 = top-1.")
    return specs


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
        ".pick{background:#fff4d6}.box{border:2px solid #0072B2;padding:.6em 1em;border-radius:6px}"
        "figure{display:inline-block;margin:.5em;vertical-align:top;max-width:540px}"
        "figcaption{font-size:12px;color:#555}.meta{color:#666;font-size:12px}")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if _finite(v) else "-"


def layer_table(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-block values of the main curves (the ones the rule can read)."""
    c = result["curves"]
    cols: list[tuple[str, Sequence[Any]]] = []
    sp = c.get("safety") or {}
    for key, name in (("dprime", "d'"), ("auroc", "AUROC"), ("accuracy", "probe acc")):
        if key in sp:
            cols.append((name, sp[key]))
    if c.get("heads"):
        cols.append(("head score", c["heads"]["layer_score"]))
    sem = c.get("semantic") or {}
    if sem.get("crossmodal"):
        cols.append(("cross-modal", sem["crossmodal"]["agreement"]))
    if sem.get("category"):
        cols.append(("category acc", sem["category"]["accuracy"]))
    if sem.get("readability") is not None:
        cols.append(("readability", sem["readability"]))
    if c.get("alignment"):
        cols.append(("refusal gap", c["alignment"]["gap"]))
    header = ["block"] + [n for n, _ in cols]
    rows = [[str(i)] + [_fmt(v[i]) for _, v in cols] for i in range(int(result["num_layers"]))]
    return header, rows


def pair_map_caption(pm: Mapping[str, Any]) -> str:
    """One sentence that reads the map: its picks against the analysis' and the no-projection probe."""
    best, smooth = pm["best"], pm["smoothed_best"]
    from sasa.analysis.pairmap import grid_value

    pick = pm.get("analysis_pick")
    at_pick = grid_value(pm, pick["s"], pick["f"]) if pick else None
    text = (f"SASA probe validation AUROC per (s, f) on a grid over all depths ({pm['n_train']} training, "
            f"{pm['n_val']} validation prompts). Maximum {best['auroc']:.3f} at ({best['s']}, {best['f']}); "
            f"smoothed maximum at ({smooth['s']}, {smooth['f']}) ({smooth['auroc']:.3f}); no projection "
            f"{pm['noproj_auroc']:.3f}.")
    if pick:
        text += (f" The analysis' pick ({pick['s']}, {pick['f']}): "
                 + (f"{at_pick:.3f}." if at_pick is not None else "off the grid."))
    return text


def analysis_section_html(result: Mapping[str, Any], charts: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The analysis as one self-contained ``<section>`` (recommendation, reason, charts, table, notes)."""
    sel = result["selection"]
    charts = charts if charts is not None else {k: (v["caption"], _svg_chart(
        v["series"], title=v["title"], xlabel=v["xlabel"], ylabel=v["ylabel"], xlim=v["xlim"], ylim=v["ylim"],
        markers=v["markers"])) for k, v in chart_specs(result).items()}
    e = html.escape
    parts = ['<section class="sasa-analysis">', "<h2>Layer analysis</h2>",
             f'<div class="box"><p><b>Recommended (s, f) = ({sel["safety"]}, {sel["fused"]})</b> '
             f'(0-based decoder blocks of {result["num_layers"]}).</p><p>{e(sel["reason"])}</p></div>']
    data = result.get("data", {})
    if data:
        parts.append("<p>" + e(", ".join(f"{k}: {v}" for k, v in data.items())) + "</p>")
    parts.append("<h3>Curves</h3>")
    for caption, text in charts.values():
        parts.append(f"<figure>{text}<figcaption>{e(caption)}</figcaption></figure>")
    if result.get("pair_map"):
        from sasa.analysis.pairmap import pair_map_svg

        pm = result["pair_map"]
        pick = pm.get("analysis_pick") or {"s": sel["safety"], "f": sel["fused"]}
        parts.append("<h3>The (s, f) map</h3><figure>" + pair_map_svg(pm, {"analysis' pick": (pick["s"], pick["f"])})
                     + f"<figcaption>{e(pair_map_caption(pm))}</figcaption></figure>")
    header, rows = layer_table(result)
    parts.append("<h3>Per block</h3><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) +
                 "</tr></thead><tbody>")
    for row in rows:
        cls = ' class="pick"' if int(row[0]) in (sel["safety"], sel["fused"]) else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    parts.append("<h3>Rule</h3><table><tbody>" + "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v))}</td></tr>" for k, v in sel.get("rule", {}).items()) +
        "</tbody></table>")
    notes = list(result.get("notes", []))
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def write_analysis_report(result: Mapping[str, Any], out_dir: str | os.PathLike, *,
                          title: str | None = None) -> dict[str, Any]:
    """Write ``curves.json``, ``plots/<name>.png`` / ``.svg`` and ``analysis.html``; return their paths."""
    out = Path(out_dir)
    specs = chart_specs(result)
    pngs, svgs, charts = [], [], {}
    for name, v in specs.items():
        kw = {k: v[k] for k in ("title", "xlabel", "ylabel", "xlim", "ylim", "markers")}
        pngs.append(_write_png(png_line_chart(v["series"], **kw), out / "plots" / f"{name}.png"))
        text = _svg_chart(v["series"], **kw)
        svgs.append(atomic_write_text(out / "plots" / f"{name}.svg", text + "\n"))
        charts[name] = (v["caption"], text)
    curves = atomic_write_json(out / "curves.json", json_safe(result))
    title = title or f"SASA layer analysis: {result.get('model') or 'model'}"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>", f'<p class="meta">Generated {generated}.</p>',
                      analysis_section_html(result, charts), "</body></html>"]) + "\n"
    html_path = atomic_write_text(out / "analysis.html", page)
    logger.info("wrote analysis report to %s (%d charts)", out, len(specs))
    return {"curves": curves, "html": html_path, "png": pngs, "svg": svgs}
