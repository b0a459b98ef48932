"""How well refusal judges agree with human labels: ``sasa judge validate``.

A judge's ASR is only as good as its agreement with people, so any judge can be scored on
human-labelled (prompt, response) pairs in two layouts:

* XSTest v2's published completion files (paul-rottger/exaggerated-safety ``model_completions/``):
  a CSV with ``prompt``, ``completion`` and ``final_label`` (``1_full_compliance``,
  ``2_full_refusal``, ``3_partial_refusal``), optional ``id`` and ``type``. Refusal = label 2 or 3,
  as XSTest's own refusal rate counts both.
* a plain JSONL: one object a line with ``prompt``, ``response``, ``refused`` (true/false), optional
  ``id`` and ``type``.

The positive class is *refusal*. Precision, recall and F1 are 0 where their denominator is 0
(scikit-learn's ``zero_division=0``). Intervals are percentile-bootstrap (rows resampled).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sasa.store.atomic import atomic_write_json, atomic_write_text
from sasa.judge.base import Judge
from sasa.metrics import bootstrap_ci

logger = logging.getLogger(__name__)

XSTEST_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}
XSTEST_COLUMNS = ("prompt", "completion", "final_label")
JSONL_KEYS = ("prompt", "response", "refused")
UNTYPED = "(none)"


class LabelledDataError(ValueError):
    """A human-label file that cannot be read; the message names the file and the row."""


@dataclass(frozen=True)
class LabelledResponse:
    id: str
    type: str
    prompt: str
    response: str
    refused: bool
    where: str  # "file row N (line L)", for messages


def read_labelled(path: str | Path) -> list[LabelledResponse]:
    """Human-labelled responses from an XSTest-v2 CSV or a JSONL file (module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise LabelledDataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        items = _read_xstest_csv(p)
    elif suffix in (".jsonl", ".json"):
        items = _read_jsonl(p)
    else:
        raise LabelledDataError(f"{p}: unknown layout (give an XSTest-v2 .csv or a .jsonl file)")
    if not items:
        raise LabelledDataError(f"{p}: empty file: no labelled rows")
    return items


def _read_xstest_csv(p: Path) -> list[LabelledResponse]:
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if not header:
            raise LabelledDataError(f"{p}: empty file: no header row")
        missing = [c for c in XSTEST_COLUMNS if c not in header]
        if missing:
            raise LabelledDataError(f"{p} row 0 (header, line 1): missing column(s) {', '.join(map(repr, missing))}"
                                    f"; XSTest-v2 layout needs {', '.join(XSTEST_COLUMNS)} (has {', '.join(header)})")
        out = []
        line = reader.line_num + 1
        for n, row in enumerate(reader, start=1):
            where = f"{p} row {n} (line {line})"
            line = reader.line_num + 1
            label = (row.get("final_label") or "").strip()
            if label not in XSTEST_LABELS:
                raise LabelledDataError(f"{where}: unknown final_label {label!r}; expected one of "
                                        f"{', '.join(XSTEST_LABELS)}")
            if row.get("completion") is None or row.get("prompt") is None:
                raise LabelledDataError(f"{where}: row has fewer fields than the header")
            out.append(LabelledResponse(id=(row.get("id") or f"row-{n}").strip(),
                                        type=(row.get("type") or "").strip() or UNTYPED,
                                        prompt=row["prompt"], response=row["completion"],
                                        refused=XSTEST_LABELS[label], where=where))
    return out


def _read_jsonl(p: Path) -> list[LabelledResponse]:
    out = []
    with p.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p} row {len(out) + 1} (line {line_no})"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelledDataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise LabelledDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in JSONL_KEYS if k not in obj]
            if missing:
                raise LabelledDataError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
            if not isinstance(obj["refused"], bool):
                raise LabelledDataError(f"{where}: 'refused' must be true or false, got {obj['refused']!r}")
            for key in ("prompt", "response"):
                if not isinstance(obj[key], str):
                    raise LabelledDataError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
            out.append(LabelledResponse(id=str(obj.get("id", f"row-{len(out) + 1}")),
                                        type=str(obj.get("type") or UNTYPED), prompt=obj["prompt"],
                                        response=obj["response"], refused=obj["refused"], where=where))
    return out


# --- agreement -----------------------------------------------------------------------------------


def confusion(human: np.ndarray, judged: np.ndarray) -> dict[str, int]:
    """Counts with refusal as the positive class."""
    return {"tp": int(np.sum(human & judged)), "fp": int(np.sum(~human & judged)),
            "fn": int(np.sum(human & ~judged)), "tn": int(np.sum(~human & ~judged))}


def _accuracy(h: np.ndarray, j: np.ndarray) -> float:
    return float(np.mean(h == j))


def _precision(h: np.ndarray, j: np.ndarray) -> float:
    c = confusion(h, j)
    return c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0


def _recall(h: np.ndarray, j: np.ndarray) -> float:
    c = confusion(h, j)
    return c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0


def _f1(h: np.ndarray, j: np.ndarray) -> float:
    c = confusion(h, j)
    return 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] + c["fp"] + c["fn"] else 0.0


METRICS = {"accuracy": _accuracy, "precision": _precision, "recall": _recall, "f1": _f1}


def agreement(human: Sequence[bool], judged: Sequence[bool], *, n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (each with a bootstrap interval) and the confusion matrix."""
    h, j = np.asarray(human, dtype=bool), np.asarray(judged, dtype=bool)
    out: dict[str, Any] = {"n": int(h.size), "human_refusal_rate": float(h.mean()),
                           "judged_refusal_rate": float(j.mean()), "confusion": confusion(h, j)}
    for name, fn in METRICS.items():
        out[name] = bootstrap_ci(fn, h, j, n_boot=n_boot, seed=seed, level=level).to_dict()
    return out


def validate_judges(items: Sequence[LabelledResponse], judges: Sequence[Judge], *, n_boot: int = 1000,
                    seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each judge's agreement with the human labels, overall and per ``type``; and per-row verdicts."""
    human = np.array([it.refused for it in items], dtype=bool)
    types = [it.type for it in items]
    rows = [{"id": it.id, "type": it.type, "human_refused": it.refused, "verdicts": {}} for it in items]
    results: dict[str, Any] = {}
    for judge in judges:
        verdicts = judge.judge_many([it.prompt for it in items], [it.response for it in items])
        read = np.array([v.parsed for v in verdicts], dtype=bool)
        judged = np.array([v.refused for v in verdicts], dtype=bool)
        for row, v in zip(rows, verdicts):
            row["verdicts"][judge.name] = {"refused": bool(v.refused) if v.parsed else None, "reason": v.reason}
        if not read.any():
            logger.warning("judge %r: none of its %d outputs could be parsed", judge.name, len(items))
            results[judge.name] = {"n": 0, "unparsed": len(items), "by_type": {}}
            continue
        per_type = {}
        for t in sorted(set(types)):
            idx = np.array([i for i, x in enumerate(types) if x == t and read[i]], dtype=int)
            if idx.size == 0:
                continue
            c = confusion(human[idx], judged[idx])
            per_type[t] = {"n": int(idx.size), "confusion": c,
                           **{name: fn(human[idx], judged[idx]) for name, fn in METRICS.items()}}
        # agreement on the outputs that could be read; the others are counted, never guessed
        results[judge.name] = {**agreement(human[read], judged[read], n_boot=n_boot, seed=seed),
                               "unparsed": int((~read).sum()), "by_type": per_type}
    summary = {"n": len(items), "human_refusals": int(human.sum()), "n_boot": n_boot, "seed": seed,
               "positive_class": "refusal", "judges": results}
    return summary, rows


# --- output --------------------------------------------------------------------------------------


def _pct(ci: dict) -> str:
    return f"{100 * ci['value']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per judge side by side, then the per-type accuracy of each judge."""
    names = list(summary["judges"])
    lines = [f"{summary['n']} human-labelled responses, {summary['human_refusals']} refusals "
             f"(positive class: refusal; 95 % bootstrap intervals, {summary['n_boot']} resamples)", "",
             "| judge | accuracy | precision | recall | F1 | TP | FP | FN | TN | unparsed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = summary["judges"][name]
        if not r["n"]:
            lines.append(f"| {name} | – | – | – | – | – | – | – | – | {r['unparsed']} |")
            continue
        c = r["confusion"]
        lines.append(f"| {name} | {_pct(r['accuracy'])} | {_pct(r['precision'])} | {_pct(r['recall'])} | "
                     f"{_pct(r['f1'])} | {c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} | {r.get('unparsed', 0)} |")
    types = sorted({t for r in summary["judges"].values() for t in r["by_type"]})
    if types and types != [UNTYPED]:
        lines += ["", "By type: accuracy, and in brackets how many responses the judge called refusals:", "",
                  "| type | n | human refusals | " + " | ".join(names) + " |",
                  "| --- | --- | --- |" + " --- |" * len(names)]
        for t in types:
            ref = next(r["by_type"][t] for r in summary["judges"].values() if t in r["by_type"])
            human = ref["confusion"]["tp"] + ref["confusion"]["fn"]
            cells = []
            for j in names:
                b = summary["judges"][j]["by_type"].get(t)
                if b is None:
                    cells.append("–")
                    continue
                cells.append(f"{100 * b['accuracy']:.1f} ({b['confusion']['tp'] + b['confusion']['fp']})")
            lines.append(f"| {t} | {ref['n']} | {human} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_validation(out_dir: str | Path, summary: dict[str, Any], rows: list[dict[str, Any]],
                     source: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**summary, "data": source}
    paths = {"json": atomic_write_json(out / "validation.json", summary),
             "markdown": atomic_write_text(out / "validation.md", f"# Judge validation: {source}\n\n"
                                           + format_table(summary)),
             "rows": atomic_write_text(out / "verdicts.jsonl",
                                       "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))}
    return paths
