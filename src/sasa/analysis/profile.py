"""The model profile: the analysed (s, f) of one model, why, and the curves behind it, as one JSON file.

``sasa analyze`` writes ``profile.json``; ``sasa generate``, ``sasa probe fit`` and ``sasa
evaluate`` take it with ``--profile`` and use its (s, f, indexing) when ``--layers`` is not given.
A profile is tied to one model by :meth:`sasa.models.adapters.Adapter.fingerprint`: using it with
another model is refused with every differing field named, because (s, f) chosen for one network
mean nothing for another.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sasa.engine.layers import LayerSelection
from sasa.store.atomic import atomic_write_json
from sasa.store.artefact import (ArtefactError, ArtefactMismatchError, ModelArtefact, library_versions, read_json_object,
                           utc_now)

FORMAT = "sasa-model-profile"
FORMAT_VERSION = 1
PROFILE_NAME = "profile.json"


class ProfileError(ArtefactError):
    """A profile file that is missing or not a sasa model profile; the message names the file."""


class ProfileMismatchError(ArtefactMismatchError):
    """A profile made for a different model than the one it is used with."""


@dataclass
class ModelProfile(ModelArtefact):
    """(s, f) for one model (by fingerprint), the reason, the rule and a summary of the curves."""

    KIND: ClassVar[str] = "profile"
    MISMATCH_ERROR: ClassVar[type[Exception]] = ProfileMismatchError
    HINT: ClassVar[str] = "Run `sasa analyze` on this model."

    fingerprint: dict
    safety: int
    fused: int
    indexing: str = "0-based"
    model: str | None = None
    reason: str = ""
    rule: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    created_at: str | None = None
    versions: dict = field(default_factory=dict)
    hiddendetect_layers: tuple[int, int] | None = None
    """HiddenDetect's inclusive (s, e) for this model, when known (the official scripts fix one per model)."""

    def selection(self) -> LayerSelection:
        """The profile's layers as a :class:`~sasa.engine.layers.LayerSelection` (engine-ready)."""
        return LayerSelection(self.safety, self.fused, self.indexing)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "model": {"name": self.model, "fingerprint": self.fingerprint},
            "layers": {"safety": self.safety, "fused": self.fused, "indexing": self.indexing},
            "reason": self.reason, "rule": self.rule, "summary": self.summary, "curves": self.curves,
            "data": self.data, "created_at": self.created_at, "versions": self.versions,
            "baselines": {"hiddendetect_layers": None if self.hiddendetect_layers is None
                          else list(self.hiddendetect_layers)},
        }

    def made_for(self) -> tuple[str | None, dict | None]:
        return self.model, self.fingerprint

    def _write(self, directory: Path) -> Path:
        """``profile.json`` in ``directory`` (or at ``directory`` when it names a .json file), atomically."""
        path = directory if directory.suffix == ".json" else directory / PROFILE_NAME
        if self.created_at is None:
            self.created_at = utc_now()
        if not self.versions:
            self.versions = library_versions()
        return atomic_write_json(path, self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Deprecated: :meth:`save_pretrained` (kept for one release)."""
        warnings.warn("ModelProfile.save is deprecated; use save_pretrained", DeprecationWarning, stacklevel=2)
        return self.save_pretrained(path)

    @classmethod
    def load(cls, path: str | os.PathLike, expect_fingerprint: dict | None = None) -> "ModelProfile":
        """Deprecated: :meth:`from_pretrained` (kept for one release)."""
        warnings.warn("ModelProfile.load is deprecated; use from_pretrained", DeprecationWarning, stacklevel=2)
        return cls.from_pretrained(path, expect_fingerprint)

    @classmethod
    def _read(cls, p: Path) -> "ModelProfile":
        """A profile directory (its ``profile.json``) or the file itself."""
        if p.is_dir():
            p = p / PROFILE_NAME
        if not p.is_file():
            raise ProfileError(f"model profile not found: {p} (write one with `sasa analyze --out DIR`)")
        d = read_json_object(p, ProfileError)
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise ProfileError(f"{p}: not a sasa model profile ({FORMAT} v{FORMAT_VERSION})")
        try:
            layers = d["layers"]
            prof = cls(fingerprint=dict(d["model"]["fingerprint"]), safety=int(layers["safety"]),
                       fused=int(layers["fused"]), indexing=layers.get("indexing", "0-based"),
                       model=d["model"].get("name"), reason=d.get("reason", ""), rule=d.get("rule", {}),
                       summary=d.get("summary", {}), curves=d.get("curves", {}), data=d.get("data", {}),
                       created_at=d.get("created_at"), versions=d.get("versions", {}))
            hd = (d.get("baselines") or {}).get("hiddendetect_layers")
            if hd is not None:
                lo, hi = (int(x) for x in hd)
                if not 0 <= lo <= hi < int(prof.fingerprint.get("num_layers", hi + 1)):
                    raise ValueError(f"baselines.hiddendetect_layers {hd} out of range")
                prof.hiddendetect_layers = (lo, hi)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{p}: incomplete profile ({exc!r})") from None
        prof.selection().resolve(int(prof.fingerprint.get("num_layers", prof.fused + 1)))
        return prof
