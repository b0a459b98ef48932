"""The plain-text table a user reads first after a run: ASR and over-refusal per mode under every
judge, then each detector's AUROC and TPR at fixed FPRs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sasa.judge import short_name


def headline(summary: dict[str, Any], fprs: Sequence[str] = ("0.05",)) -> str:
    """A plain-text table of the numbers a user looks at first: ASR and over-refusal under every
    judge of the run side by side, then the detector figures."""

    def pct(x: Any) -> str:
        return "   -  " if x is None or x != x else f"{100 * x:5.1f}%"

    judges = list(dict.fromkeys(j for m in summary["modes"].values() for j in (m.get("by_judge") or {})))
    cols = [(f"ASR {short_name(j)}", j, "asr") for j in judges] + \
        [(f"over-ref. {short_name(j)}", j, "over_refusal") for j in judges]
    if not judges:
        cols = [("ASR", None, "asr"), ("over-refusal", None, "over_refusal")]
    widths = [max(7, len(c[0])) for c in cols]
    heads = "".join(f" {c[0]:>{w}s}" for c, w in zip(cols, widths))
    tpr_heads = "".join(f" {'TPR@' + f'{100 * float(f):g}' + '%FPR':>11s}" for f in fprs)
    rows = [f"{'mode':14s}{heads} {'AUROC':>7s}{tpr_heads}"]
    for mode, m in summary["modes"].items():
        det = m.get("detector") or {}
        auroc = (det.get("auroc") or {}).get("value")
        cells = ""
        for (_, judge, key), w in zip(cols, widths):
            src = m if judge is None else (m.get("by_judge") or {}).get(judge) or {}
            cells += f" {pct((src.get(key) or {}).get('value')):>{w}s}"
        tprs = "".join(f" {pct(((det.get('tpr_at_fpr') or {}).get(f) or {}).get('value')):>11s}" for f in fprs)
        rows.append(f"{mode:14s}{cells} {'-' if auroc is None else f'{auroc:.3f}':>7s}{tprs}")
    text = (summary.get("run") or {}).get("text_refusal")
    if text:
        per = ", ".join(f"{pct(v).strip()} ({short_name(j)})" for j, v in (text.get("by_judge") or {}).items())
        rows.append(f"\nsame harmful requests as plain text (vanilla): {per or pct(text['rate']).strip()} refused "
                    f"(n={text['n']}); typed on pages: ASR above")
    return "\n".join(rows)
