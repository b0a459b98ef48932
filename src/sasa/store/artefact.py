"""What every file made for one model shares: a format stamp, the model it was made for (name and
fingerprint), the library versions, and ``save_pretrained`` / ``from_pretrained`` on a directory.

A detector (:class:`sasa.detector.probe.LinearProbe`) and a model profile
(:class:`sasa.analysis.profile.ModelProfile`) are both such artefacts; each refuses to be used
with another model, naming every field where the fingerprints differ.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from sasa.models.adapters import fingerprint_differences


class ArtefactError(ValueError):
    """A file that is missing or not the artefact it should be; the message names the file."""


class ArtefactMismatchError(ValueError):
    """An artefact made for a different model than the one it is used with."""


def library_versions() -> dict[str, str]:
    """The versions an artefact is stamped with (sasa, torch, transformers)."""
    import torch
    import transformers

    import sasa

    return {"sasa": sasa.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_json_object(path: Path, error: type[Exception] = ArtefactError) -> dict[str, Any]:
    """A JSON object from ``path``, or ``error`` naming the file (never a bare decoder trace)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: not a JSON object")
    return raw


class ModelArtefact:
    """Mixin for artefacts tied to one model.

    A subclass sets ``KIND`` (the word in messages), ``MISMATCH_ERROR``, ``HINT``
    (how to make one for this model) and implements :meth:`made_for`, ``_write(directory)`` and
    ``_read(path)``; it gets :meth:`check_model`, :meth:`save_pretrained` and :meth:`from_pretrained`."""

    KIND: ClassVar[str] = "artefact"
    MISMATCH_ERROR: ClassVar[type[Exception]] = ArtefactMismatchError
    HINT: ClassVar[str] = ""

    def made_for(self) -> tuple[str | None, dict | None]:
        """(model name, model fingerprint) this artefact was made for."""
        raise NotImplementedError

    def check_model(self, fingerprint: dict, source: str | None = None) -> None:
        """Raise ``MISMATCH_ERROR`` naming every field where ``fingerprint`` differs from the made-for model's."""
        name, made = self.made_for()
        what = source or self.KIND
        if not made:
            raise self.MISMATCH_ERROR(f"{what} records no model fingerprint; {self.HINT}")
        diffs = fingerprint_differences(made, fingerprint, self.KIND)
        if diffs:
            raise self.MISMATCH_ERROR(f"{what} was made for another model ({name or '?'}): " + "; ".join(diffs)
                                      + (f". {self.HINT}" if self.HINT else ""))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the artefact's directory atomically; returns it."""
        return self._write(Path(directory))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, expect_fingerprint: dict | None = None) -> Any:
        """Read an artefact directory; with ``expect_fingerprint``, refuse one made for another model."""
        obj = cls._read(Path(path))
        if expect_fingerprint is not None:
            obj.check_model(expect_fingerprint, source=f"{cls.KIND} {path}")
        return obj

    def _write(self, directory: Path) -> Path:
        raise NotImplementedError

    @classmethod
    def _read(cls, path: Path) -> Any:
        raise NotImplementedError
