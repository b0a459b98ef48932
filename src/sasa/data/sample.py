"""The one sample type every stage of the pipeline passes along, and its JSONL manifest form."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

LABELS = ("harmful", "benign", "unknown")


class ManifestError(ValueError):
    """A manifest line that cannot be read; the message names the file and line."""


@dataclass
class Sample:
    """One prompt, optionally with an image, and what we know about it."""

    id: str
    prompt: str
    image: str | None = None
    label: str = "unknown"
    category: str | None = None
    source: str | None = None
    attack: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"sample id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.prompt, str):
            raise ValueError(f"sample {self.id!r}: prompt must be a string")
        if self.label not in LABELS:
            raise ValueError(f"sample {self.id!r}: label {self.label!r} is not one of {LABELS}")

    @property
    def is_harmful(self) -> bool:
        return self.label == "harmful"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Sample":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(row) - known
        if unknown:
            raise ValueError(f"unknown sample fields {sorted(unknown)}")
        if "id" not in row or "prompt" not in row:
            raise ValueError("a sample needs at least 'id' and 'prompt'")
        return cls(**row)


def read_manifest(path: str | os.PathLike) -> list[Sample]:
    """Read a JSONL manifest; relative image paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    samples: list[Sample] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a line must hold a JSON object")
                sample = Sample.from_dict(row)
            except (ValueError, TypeError) as exc:
                raise ManifestError(f"{path}:{lineno}: {exc}") from None
            if sample.id in seen:
                raise ManifestError(f"{path}:{lineno}: duplicate sample id {sample.id!r}")
            seen.add(sample.id)
            if sample.image is not None and not os.path.isabs(sample.image):
                sample.image = str((path.parent / sample.image).resolve())
            samples.append(sample)
    return samples


def write_manifest(samples: Iterable[Sample], path: str | os.PathLike) -> Path:
    """Write samples as JSONL atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
