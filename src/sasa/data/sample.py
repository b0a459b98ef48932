"""The one sample type every stage of the pipeline passes along, and its JSONL manifest form."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from sasa.store.atomic import atomic_path

LABELS = ("harmful", "benign", "unknown")


class ManifestError(ValueError):
    """A manifest line that cannot be read; the message names the file and line."""


@dataclass
class Sample:
    """One prompt, optionally with an image, and what we know about it.

    ``meta["rendered_text"]``, where known, is the text drawn in the image (typographic attacks):
    reports show it beside the prompt so a reader can audit a judge's verdict.
    """

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


def iter_manifest(path: str | os.PathLike) -> Iterator[tuple[int, Sample | ManifestError]]:
    """Yield ``(line number, sample or the error for that line)`` for each non-blank manifest line.

    Relative image paths resolve against the manifest's folder.  Duplicate ids are not checked here
    (see :func:`read_manifest`), so callers can choose to raise or skip.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
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
                yield lineno, ManifestError(f"{path}:{lineno}: {exc}")
                continue
            if sample.image is not None and not os.path.isabs(sample.image):
                sample.image = str((path.parent / sample.image).resolve())
            yield lineno, sample


MANIFEST_ERROR = "manifest_error"  # meta key of a placeholder for a line that could not be read


def read_manifest(path: str | os.PathLike, on_error: str = "raise") -> list[Sample]:
    """Read a JSONL manifest; relative image paths resolve against the manifest's folder.

    ``on_error="skip"`` keeps going past a malformed line or a duplicate id: the line becomes a
    placeholder sample (id ``FILE:LINE``, the reason in ``meta["manifest_error"]``) that the run
    records as an ``error``, so the report counts it and nothing is silently lost."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    samples: list[Sample] = []
    seen: set[str] = set()
    for lineno, item in iter_manifest(path):
        if not isinstance(item, ManifestError) and item.id in seen:
            item = ManifestError(f"{path}:{lineno}: duplicate sample id {item.id!r}")
        if isinstance(item, ManifestError):
            if on_error == "raise":
                raise item
            samples.append(Sample(id=f"{path.name}:{lineno}", prompt="", meta={MANIFEST_ERROR: str(item)}))
            continue
        seen.add(item.id)
        samples.append(item)
    return samples


def unreadable(sample: Sample) -> str | None:
    """Why ``sample`` is a placeholder for an unreadable manifest line, or None."""
    return sample.meta.get(MANIFEST_ERROR)


def write_manifest(
    samples: Iterable[Sample], path: str | os.PathLike, *, relative_images: bool = False
) -> Path:
    """Write samples as JSONL atomically (temp file + rename), so a crash never leaves half a file.

    With ``relative_images`` image paths are written relative to the manifest's folder (they are
    resolved back by :func:`read_manifest`), which keeps a manifest and its images movable together.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for s in samples:
            row = s.to_dict()
            if relative_images and row["image"] is not None:
                row["image"] = os.path.relpath(os.path.abspath(row["image"]), base)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
