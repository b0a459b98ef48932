"""The per-prompt record and its files: append-only JSONL that survives a crash (complete lines are
kept, a torn last line is cut)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sasa.store.atomic import atomic_write_text

logger = logging.getLogger(__name__)


DECISIONS = ("answer", "refuse", "error")


@dataclass
class Record:
    """One prompt's outcome in one mode: what ``Guard.run`` and the evaluation write, a JSON line each.

    decision: what the system did -- ``answer``, ``refuse`` (the guard or detector flagged it), or
        ``error`` (the sample could not be run; ``error`` says why, and nothing else is filled).
    refused: the *judged* outcome -- True for a ``refuse`` decision, else the primary judge's verdict
        on the response; None where no judge ran (``Guard.run``) or on an error.
    response: the text the user gets (the refusal message when refused by decision).
    image: the sample's image file, where it has one (reports show it as a thumbnail).
    """

    id: str
    mode: str
    decision: str
    response: str = ""
    refused: bool | None = None
    score: float | None = None
    latency_s: float | None = None
    label: str | None = None
    category: str | None = None
    source: str | None = None
    attack: str | None = None
    prompt: str | None = None
    image: str | None = None
    image_text: str | None = None
    judge: str | None = None
    verdicts: dict[str, bool] = field(default_factory=dict)
    n_new_tokens: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # mode-specific fields (ECSO's check and caption)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"record {self.id!r}: decision must be one of {DECISIONS}, got {self.decision!r}")

    @classmethod
    def from_sample(cls, sample: Any, mode: str, decision: str, **fields: Any) -> Record:
        fields.setdefault("image", sample.image if isinstance(sample.image, str) else None)
        return cls(id=sample.id, mode=mode, decision=decision, label=sample.label, category=sample.category,
                   source=sample.source, attack=sample.attack, **fields)

    def to_json(self) -> dict[str, Any]:
        """The JSON line: ``extra`` flattened in; ``n_new_tokens`` and ``error`` only when set."""
        out = asdict(self)
        extra = out.pop("extra")
        for key in ("n_new_tokens", "error"):
            if out[key] is None:
                del out[key]
        return {**out, **extra}


def read_records(path: str | os.PathLike, repair: bool = True) -> list[dict[str, Any]]:
    """All complete JSON lines of ``path`` (none if absent); a partial last line is truncated away."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data) and repair:
        logger.warning("%s: dropping a partial last line left by an interrupted run", path)
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    records = []
    for lineno, line in enumerate(data[:good_end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not a JSON line ({exc}); refusing to append to it") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise ValueError(f"{path}:{lineno}: not a sasa record (no 'id'); refusing to append to it")
        records.append(rec)
    return records


def drop_errors(path: str | os.PathLike) -> int:
    """Rewrite ``path`` (atomically) without its ``error`` records, so a rerun retries them; returns
    how many were dropped."""
    records = read_records(path)
    kept = [r for r in records if r.get("decision") != "error"]
    if len(kept) < len(records):
        atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return len(records) - len(kept)


def append_records(path: str | os.PathLike, records: Iterable[Record | dict[str, Any]]) -> None:
    """Append records and fsync, so finished work is on disk before the next batch starts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_json() if isinstance(rec, Record) else rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
