"""Write ``report.md`` (+ ``plots/*.svg``) and a self-contained ``report.html`` from results.

The HTML inlines its SVG charts and CSS: no scripts, no external assets, so it can be mailed,
archived or opened offline and still show everything. All files are written atomically.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sasa import metrics as M
from sasa.store.atomic import atomic_write_bytes, atomic_write_text
from sasa.report import decisions, svg
from sasa.report.summary import mode_order, normalise_records, summarize

logger = logging.getLogger(__name__)

NA = "n/a"


# --- formatting -----------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fmt_pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if _finite(x) else NA


def fmt_num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else NA


def fmt_ci(ci: Mapping[str, Any] | None, pct: bool = True) -> str:
    """"value [low, high]" for a bootstrap-CI dict, or n/a."""
    if not ci or not _finite(ci.get("value")):
        return NA
    f = fmt_pct if pct else fmt_num
    if _finite(ci.get("low")) and _finite(ci.get("high")):
        lo = f(ci["low"]).rstrip("%")
        return f"{f(ci['value'])} [{lo}, {f(ci['high'])}]"
    return f(ci["value"])


def _fpr_label(key: str) -> str:
    return f"TPR@{float(key) * 100:g}%FPR"


def _tpr_keys(summary: Mapping[str, Any]) -> list[str]:
    return [f"{f:g}" for f in summary.get("config", {}).get("fprs", M.DEFAULT_FPRS)]


def mode_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-mode table (shared by Markdown and HTML)."""
    keys = _tpr_keys(summary)
    header = ["mode", "harmful", "benign", "ASR", "over-refusal", "AUROC", "AUPRC"]
    header += [_fpr_label(k) for k in keys] + ["latency mean / p95 (s)"]
    rows = []
    for mode, m in summary["modes"].items():
        det = m.get("detector") or {}
        tprs = det.get("tpr_at_fpr", {})
        lat = m.get("latency")
        lat_s = f"{fmt_num(lat['mean'])} / {fmt_num(lat.get('p95'))}" if lat else NA
        rows.append(
            [mode, str(m["n_harmful"]), str(m["n_benign"]), fmt_ci(m.get("asr")), fmt_ci(m.get("over_refusal")),
             fmt_ci(det.get("auroc"), pct=False), fmt_ci(det.get("auprc"), pct=False)]
            + [fmt_ci(tprs.get(k)) for k in keys]
            + [lat_s]
        )
    return header, rows


def category_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-category ASR (harmful samples), one column per mode."""
    modes = list(summary["modes"])
    cats = sorted({c for m in summary["modes"].values() for c, e in m["per_category"].items() if e["n_harmful"]})
    header = ["category"] + [f"ASR {m}" for m in modes]
    rows = []
    for c in cats:
        row = [c]
        for m in modes:
            e = summary["modes"][m]["per_category"].get(c)
            row.append(f"{fmt_pct(e['asr'])} (n={e['n_harmful']})" if e and e["n_harmful"] else NA)
        rows.append(row)
    return header, rows


def source_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per source, one row per mode: a harmful source's ASR, flagged share and AUROC against all
    benign test items; a benign source's over-refusal and flagged share.  Empty with one source."""
    sources = list(dict.fromkeys(src for m in summary["modes"].values() for src in (m.get("per_source") or {})))
    if len(sources) < 2:
        return [], []
    header = ["source", "mode", "harmful", "benign", "ASR", "flagged (harmful)", "AUROC vs all benign",
              "over-refusal", "flagged (benign)"]
    rows = []
    for src in sources:
        for mode, m in summary["modes"].items():
            e = (m.get("per_source") or {}).get(src)
            if not e:
                continue
            rows.append([src, mode, str(e.get("n_harmful", 0)), str(e.get("n_benign", 0)), fmt_ci(e.get("asr")),
                         fmt_pct(e["flagged"]) if "flagged" in e else NA,
                         fmt_ci(e.get("auroc_vs_all_benign"), pct=False), fmt_ci(e.get("over_refusal")),
                         fmt_pct(e["flagged_benign"]) if "flagged_benign" in e else NA])
    return header, rows


def form_tables(summary: Mapping[str, Any], top: int = 8) -> tuple[str, list[str], list[list[str]], list[str],
                                                                   list[list[str]]]:
    """The openings' counts per label (the ``top`` most common) and, per scored mode, its AUROC
    beside its AUROC within openings, under a line giving the form-only baseline."""
    form = summary.get("form")
    if not form:
        return "", [], [], [], []
    fitted = form.get("fitted_on")
    lead = (f"A score that reads only the first {form['words']} words of each request (its opening's harmful share "
            f"among the {fitted['n_harmful']} harmful and {fitted['n_benign']} benign training items) reaches AUROC "
            f"{fmt_ci(form['form_only_auroc'], pct=False)}. " if fitted else "")
    lead += (f"{form['shared_openings']} of {len(form['openings'])} test openings occur under both labels. "
             "AUROC within openings compares only harmful and benign requests that open alike: what a detector "
             "separates beyond the form.")
    oh = ["opening", "harmful", "benign"]
    orows = [[k, str(v["n_harmful"]), str(v["n_benign"])] for k, v in list(form["openings"].items())[:top]]
    mh = ["mode", "AUROC", "AUROC within openings"]
    mrows = [[m, f"{e['auroc']:.3f}", fmt_ci(e["auroc_within_openings"], pct=False)]
             for m, e in form["by_mode"].items()]
    return lead, oh, orows, mh, mrows


_DECISIONS_NOTE = ("From the detector's mode: the harmful request it scored highest among those it refused, a benign "
                   "request refused, a harmful request answered (an attack success), and an answer the judges read "
                   "differently, with what each judge went by.")

_TEST_POINTS_NOTE = ("Where each detector would have to put its threshold on these test prompts to reach each FPR "
                     "(hindsight, for comparing detectors); the guard used the validation thresholds above.")


def run_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The run's details, when the run wrote them (``sasa demo``): model, (s, f) and where they came
    from, data, wall time."""
    run = summary.get("run") or {}
    if not run:
        return [], []
    rows = [["model", str(run.get("model", NA))]]
    layers = run.get("layers") or {}
    if layers:
        rows.append(["(s, f)", f"({layers.get('s')}, {layers.get('f')}), {layers.get('indexing', '')}; from "
                               f"{layers.get('from', 'the command line')}"])
    for k, groups in (run.get("splits") or {}).items():
        counts: dict[str, int] = {}
        for per_label in groups.values():  # class_balance: {split: {label: n}}
            for label, n in per_label.items():
                counts[label] = counts.get(label, 0) + n
        rows.append([f"{k} split", ", ".join(f"{n} {label}" for label, n in counts.items() if n)])
    bench = {k: v for k, v in (run.get("benchmarks") or {}).items() if v}
    if bench:
        rows.append(["published benchmarks", ", ".join(f"{k}: {v}" for k, v in bench.items())])
    judges = run.get("judges") or {}
    if judges:
        rows.append(["judges", ", ".join(judges.get("names", [])) + (f"; {judges['why']}" if judges.get("why") else "")])
    if "seconds" in run:
        rows.append(["wall time", f"{run['seconds']:.0f} s"])
    return ["", ""], rows


def text_page_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The demo's point: the same harmful requests refused as plain text, as the page's words in
    text with FigStep's prompt (the same form, no image), and on the page, by the vanilla model,
    under every judge (``run.text_refusal``, ``page_text_refusal``, ``page_refusal``)."""
    run = summary.get("run") or {}
    sources = [(what, run.get(key)) for what, key in (
        ("as plain text", "text_refusal"), ("the page's words as text, with FigStep's prompt", "page_text_refusal"),
        ("on the page", "page_refusal"))]
    sources = [(what, v) for what, v in sources if v and v.get("n")]
    if len(sources) < 2:
        return [], []
    judges = list(dict.fromkeys(j for _, v in sources for j in (v.get("by_judge") or {})))
    header = ["the same harmful requests (vanilla)", "n", "refused (primary judge)"] + [f"refused, {j}" for j in judges]
    rows = [[what, str(v["n"]), fmt_ci(v.get("ci")) if v.get("ci") else fmt_pct(v.get("rate"))]
            + [fmt_pct((v.get("by_judge") or {}).get(j)) for j in judges] for what, v in sources]
    return header, rows


_TEXT_PAGE_NOTE = ("Read down the rows: a fall from the first row to the second is the request's form (a FigStep "
                   "statement and its list prompt), from the second to the third the image.")


def guard_threshold_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The thresholds the guard used (set on validation) and how they transferred to the test set."""
    transfer = (summary.get("run") or {}).get("threshold_transfer") or {}
    if not transfer:
        return [], []
    header = ["detector", "threshold (set on validation)", "target FPR", "validation FPR",
              "test benign flagged [95% CI]", "transfers"]
    rows = [[mode, fmt_num(t.get("threshold")), fmt_pct(t.get("target_fpr")), fmt_pct(t.get("validation_fpr")),
             f"{fmt_pct(t['test_benign_flagged'])} [{fmt_pct(t['low'])}, {fmt_pct(t['high'])}] (n={t['n_test_benign']})",
             "yes" if t["transfers"] else "no"] for mode, t in transfer.items()]
    return header, rows


def threshold_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    keys = _tpr_keys(summary)
    header = ["mode"] + [f"threshold @{float(k) * 100:g}% FPR (achieved FPR)" for k in keys]
    rows = []
    for mode, m in summary["modes"].items():
        det = m.get("detector")
        if not det:
            continue
        row = [mode]
        for k in keys:
            e = det["tpr_at_fpr"].get(k)
            row.append(f"{e['threshold']:.4g} ({fmt_pct(e['fpr'])})" if e else NA)
        rows.append(row)
    return header, rows


def judge_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """ASR and over-refusal per mode under every judge that left verdicts, side by side."""
    judges = list(dict.fromkeys(j for m in summary["modes"].values() for j in (m.get("by_judge") or {})))
    if not judges:
        return [], []
    header = ["mode"] + [f"ASR {j}" for j in judges] + [f"over-refusal {j}" for j in judges]
    rows = []
    for mode, m in summary["modes"].items():
        bj = m.get("by_judge") or {}
        rows.append([mode] + [fmt_ci((bj.get(j) or {}).get("asr")) for j in judges]
                    + [fmt_ci((bj.get(j) or {}).get("over_refusal")) for j in judges])
    return header, rows


def _clip(text: Any, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


DECISION_HEADER = ["page", "case", "mode", "id", "score", "request (as the page shows it)", "response", "verdicts"]


def _decision_cells(r: Mapping[str, Any], case: str) -> list[str]:
    reasons = r.get("judge_reasons") or {}
    verdicts = "; ".join(f"{name}: {'refused' if refused else 'answered'}"
                         + (f" ({reasons[name]})" if name in reasons else "")
                         for name, refused in (r.get("verdicts") or {}).items())
    score = r.get("score")
    return [case, str(r["mode"]), str(r.get("id")), NA if score is None else f"{score:.3f}",
            _clip(r.get("image_text") or r.get("prompt"), 160), _clip(r.get("response"), 300),
            verdicts or ("guard refused" if r.get("decision") == "refuse" else "")]


def decision_markdown(examples: Sequence[Mapping[str, Any]], out_dir: Path, thumbs: str = "thumbs") -> str:
    """The decision examples (each with its ``png`` thumbnail or None) as a Markdown table; each
    thumbnail is written to ``out_dir/thumbs``."""
    rows = []
    for k, ex in enumerate(examples):
        png = ex.get("png")
        link = ""
        if png:
            atomic_write_bytes(out_dir / thumbs / f"example-{k}.png", png)
            link = f"![{ex['case']}]({thumbs}/example-{k}.png)"
        rows.append([link] + _decision_cells(ex["record"], ex["case"]))
    return _md_table(DECISION_HEADER, rows) if rows else ""


def decision_html(examples: Sequence[Mapping[str, Any]]) -> str:
    """The decision examples as an HTML table, thumbnails inlined as data URIs (the page stays self-contained)."""
    if not examples:
        return ""
    rows = []
    for ex in examples:
        png = ex.get("png")
        img = (f'<img alt="{html.escape(ex["case"])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
               if png else "")
        rows.append(f"<tr><td>{img}</td>" + "".join(f"<td>{html.escape(c)}</td>"
                                                    for c in _decision_cells(ex["record"], ex["case"])) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in DECISION_HEADER)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def example_rows(records: Iterable[Mapping[str, Any]], per_mode: int = 4) -> tuple[list[str], list[list[str]]]:
    """A few answered responses per mode with every judge's verdict, for auditing the judges.

    Picked deterministically: responses on which the judges disagree first, then harmful, then
    benign ones, each in id order.
    """
    recs = [r for r in records if r.get("decision") != "refuse" and r.get("verdicts")]
    judges = list(dict.fromkeys(j for r in recs for j in r["verdicts"]))
    if not judges:
        return [], []
    header = ["mode", "id", "label", "prompt", "response"] + judges
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in recs):
        mine = [r for r in recs if r["mode"] == mode]

        def rank(r: Mapping[str, Any]) -> tuple:
            agree = len(set(r["verdicts"].values())) == 1
            return (agree, r.get("label") != "harmful", str(r.get("id")))

        for r in sorted(mine, key=rank)[:per_mode]:
            prompt = _clip(r.get("prompt"), 160)
            if r.get("image_text"):
                prompt = f"[image: {_clip(r['image_text'], 120)}] {prompt}"
            rows.append([mode, str(r.get("id")), str(r.get("label")), prompt, _clip(r.get("response"), 360)]
                        + [("refused" if r["verdicts"][j] else "answered") if j in r["verdicts"] else NA
                           for j in judges])
    return header, rows


# --- plots ----------------------------------------------------------------------------------------


def build_plots(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (caption, svg text). ROC and histograms only for modes with scores of both classes."""
    recs = normalise_records(records)
    order = [m for m in mode_order(recs, None) if m in summary["modes"]]
    plots: dict[str, tuple[str, str]] = {}

    modes = list(summary["modes"])
    series = []
    for key, label in (("asr", "ASR (harmful)"), ("over_refusal", "over-refusal (benign)")):
        vals, lows, highs = [], [], []
        for m in modes:
            ci = summary["modes"][m].get(key)
            vals.append(ci["value"] if ci else None)
            lows.append(ci["low"] if ci else None)
            highs.append(ci["high"] if ci else None)
        series.append({"label": label, "values": vals, "lows": lows, "highs": highs})
    plots["rates"] = (
        "ASR and over-refusal per mode (bars: point estimate; whiskers: bootstrap CI)",
        svg.bar_chart(modes, series, title="ASR and over-refusal per mode", ylabel="rate"),
    )

    roc_series = []
    for m in order:
        det = summary["modes"][m].get("detector")
        if not det:
            continue
        scored = [r for r in recs if r["mode"] == m and r["label"] in ("harmful", "benign") and r["score"] is not None]
        y = [r["label"] == "harmful" for r in scored]
        s = [r["score"] for r in scored]
        fpr, tpr, _ = M.roc_curve(y, s)
        roc_series.append((f"{m} (AUROC {det['auroc']['value']:.3f})", fpr.tolist(), tpr.tolist()))
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in m)
        name = f"hist_{safe}"
        if name in plots:  # two modes that sanitise to the same file name
            name = f"hist_{safe}_{len(plots)}"
        plots[name] = (
            f"Detector scores, harmful vs benign ({m})",
            svg.histogram(
                [("harmful", [v for v, h in zip(s, y) if h]), ("benign", [v for v, h in zip(s, y) if not h])],
                title=f"Score distribution: {m}",
                xlabel="detector score",
            ),
        )
    if roc_series:
        plots["roc"] = (
            "ROC curves of the detector score per scored mode",
            svg.line_chart(roc_series, title="ROC", xlabel="false-positive rate (benign flagged)",
                           ylabel="true-positive rate (harmful flagged)", diagonal=True),
        )
    order_keys = ["rates", "roc"] + [k for k in plots if k.startswith("hist_")]
    return {k: plots[k] for k in order_keys if k in plots}


# --- documents ------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _notes(summary: Mapping[str, Any]) -> list[str]:
    return [f"{mode}: {n}" for mode, m in summary["modes"].items() for n in m.get("notes", [])]


_JUDGE_NOTE = ("The per-mode table counts refusals with the run's primary judge; here every judge of the run "
               "recounts the same responses (a guard's refusal counts as refused under all).")


def _explainer(summary: Mapping[str, Any]) -> str:
    cfg = summary.get("config", {})
    return (
        f"Rates in %, with {cfg.get('level', 0.95) * 100:g}% percentile-bootstrap intervals "
        f"({cfg.get('n_boot', '?')} resamples, seed {cfg.get('seed', '?')}). ASR: share of harmful samples "
        "neither blocked by the guard nor refused per the judge. Over-refusal: share of benign samples "
        f"refused. Detector metrics use the guard score (higher = more harmful); thresholds flag "
        f"score {cfg.get('threshold_rule', '>=')} threshold. TPR@x%FPR is the best ROC point whose FPR on "
        "benign samples is <= x%."
    )


def render_markdown(summary: Mapping[str, Any], plots: Mapping[str, tuple[str, str]], *, title: str,
                    generated: str, plot_dir: str = "plots", examples: tuple[list[str], list[list[str]]] = ([], []),
                    decision_table: str = "") -> str:
    parts = [f"# {title}", "", f"_Generated {generated}._", ""]
    rh, rr = run_table(summary)
    if rr:
        parts += ["## The run", "", _md_table(rh, rr), ""]
    xh, xr = text_page_table(summary)
    if xr:
        parts += ["## Text against page", "", _TEXT_PAGE_NOTE, "", _md_table(xh, xr), ""]
    parts += [_explainer(summary), "", "## Per mode", ""]
    parts.append(_md_table(*mode_table(summary)))
    jh, jr = judge_table(summary)
    if jr:
        parts += ["", "## ASR and over-refusal by judge", "", _JUDGE_NOTE, "", _md_table(jh, jr)]
    gh, gr = guard_threshold_table(summary)
    if gr:
        parts += ["", "## Thresholds the guard used", "", _md_table(gh, gr)]
    th, tr = threshold_table(summary)
    if tr:
        parts += ["", "## Test-set operating points", "", _TEST_POINTS_NOTE, "", _md_table(th, tr)]
    sh, sr = source_table(summary)
    if sr:
        parts += ["", "## Per source", "", _md_table(sh, sr)]
    lead, oh, orows, mh, mrows = form_tables(summary)
    if lead:
        parts += ["", "## Form: what the openings alone tell", "", lead, "", _md_table(oh, orows)]
        if mrows:
            parts += ["", _md_table(mh, mrows)]
    ch, cr = category_table(summary)
    parts += ["", "## ASR per category", ""]
    parts.append(_md_table(ch, cr) if cr else "_No harmful samples._")
    if plots:
        parts += ["", "## Plots", ""]
        for name, (caption, _) in plots.items():
            parts += [f"![{caption}]({plot_dir}/{name}.svg)", ""]
    if decision_table:
        parts += ["", "## One example of each decision", "", _DECISIONS_NOTE, "", decision_table]
    if examples[1]:
        parts += ["", "## Example responses and each judge's verdict", "", _md_table(*examples)]
    notes = _notes(summary)
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-size:.85rem;color:#555;max-width:440px}.meta{color:#666;font-size:.9rem}
.examples td{text-align:left;font-size:.85rem}.examples td:nth-child(5){max-width:420px}
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: Mapping[str, Any], plots: Mapping[str, tuple[str, str]], *, title: str, generated: str,
                examples: tuple[list[str], list[list[str]]] = ([], []), decision_table: str = "") -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Generated {html.escape(generated)}.</p>',
    ]
    rh, rr = run_table(summary)
    if rr:
        parts += ["<h2>The run</h2>", _html_table(rh, rr)]
    xh, xr = text_page_table(summary)
    if xr:
        parts += ["<h2>Text against page</h2>", f"<p>{html.escape(_TEXT_PAGE_NOTE)}</p>", _html_table(xh, xr)]
    parts += [f"<p>{html.escape(_explainer(summary))}</p>", "<h2>Per mode</h2>", _html_table(*mode_table(summary))]
    jh, jr = judge_table(summary)
    if jr:
        parts += ["<h2>ASR and over-refusal by judge</h2>", f"<p>{html.escape(_JUDGE_NOTE)}</p>", _html_table(jh, jr)]
    gh, gr = guard_threshold_table(summary)
    if gr:
        parts += ["<h2>Thresholds the guard used</h2>", _html_table(gh, gr)]
    th, tr = threshold_table(summary)
    if tr:
        parts += ["<h2>Test-set operating points</h2>", f"<p>{html.escape(_TEST_POINTS_NOTE)}</p>",
                  _html_table(th, tr)]
    sh, sr = source_table(summary)
    if sr:
        parts += ["<h2>Per source</h2>", _html_table(sh, sr)]
    lead, oh, orows, mh, mrows = form_tables(summary)
    if lead:
        parts += ["<h2>Form: what the openings alone tell</h2>", f"<p>{html.escape(lead)}</p>", _html_table(oh, orows)]
        if mrows:
            parts.append(_html_table(mh, mrows))
    ch, cr = category_table(summary)
    parts += ["<h2>ASR per category</h2>", _html_table(ch, cr) if cr else "<p>No harmful samples.</p>"]
    if plots:
        parts.append("<h2>Plots</h2>")
        for caption, text in plots.values():
            parts.append(f"<figure>{text}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if decision_table:
        parts += ["<h2>One example of each decision</h2>", f"<p>{html.escape(_DECISIONS_NOTE)}</p>",
                  f'<div class="examples">{decision_table}</div>']
    if examples[1]:
        parts += ["<h2>Example responses and each judge's verdict</h2>",
                  "<p>Answered responses (a guard's refusals are refused under every judge); those on which the "
                  "judges disagree first.</p>", f'<div class="examples">{_html_table(*examples)}</div>']
    notes = _notes(summary)
    if notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    summary: Mapping[str, Any] | None = None,
    *,
    title: str = "SASA evaluation report",
    n_boot: int = 1000,
    seed: int = 0,
    generated: str | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``plots/*.svg`` and ``report.html`` under ``out_dir``; returns their paths.

    ``summary`` defaults to :func:`summarize` of the records (``n_boot``, ``seed``).
    """
    recs = [r for r in records if r.get("decision") != "error"]  # skipped samples have nothing to plot
    if summary is None:
        summary = summarize(recs, n_boot=n_boot, seed=seed)
    out = Path(out_dir)
    generated = generated or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    plots = build_plots(recs, summary)
    examples = example_rows(recs)
    chosen = [{**ex, "png": decisions.thumbnail_png(ex["record"].get("image"))}
              for ex in decisions.decision_examples(recs)]
    plot_paths = [atomic_write_text(out / "plots" / f"{name}.svg", text + "\n") for name, (_, text) in plots.items()]
    md = atomic_write_text(out / "report.md", render_markdown(
        summary, plots, title=title, generated=generated, examples=examples,
        decision_table=decision_markdown(chosen, out)))
    page = atomic_write_text(out / "report.html", render_html(summary, plots, title=title, generated=generated,
                                                                examples=examples,
                                                                decision_table=decision_html(chosen)))
    logger.info("wrote report to %s (%d plots)", out, len(plots))
    return {"markdown": md, "html": page, "plots": plot_paths}
