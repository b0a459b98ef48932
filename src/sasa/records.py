"""Append-only JSONL result files that survive a crash: complete lines are kept, a torn last line is cut."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)


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


def append_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Append records and fsync, so finished work is on disk before the next batch starts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
