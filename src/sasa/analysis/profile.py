"""The model profile: the analysed (s, f) of one model, why, and the curves behind it, as one JSON file.

``sasa analyze`` writes ``profile.json``; ``sasa generate``, ``sasa probe fit`` and ``sasa
evaluate`` take it with ``--profile`` and use its (s, f, indexing) when ``--layers`` is not given.
A profile is tied to one model by :meth:`sasa.models.adapters.Adapter.fingerprint`: using it with
another model is refused with every differing field named, because (s, f) chosen for one network
mean nothing for another.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sasa.layers import LayerSelection
from sasa.atomic import atomic_write_json
from sasa.models.adapters import fingerprint_differences

FORMAT = "sasa-model-profile"
FORMAT_VERSION = 1


class ProfileError(ValueError):
    """A profile file that is missing or not a sasa model profile; the message names the file."""


class ProfileMismatchError(ValueError):
    """A profile made for a different model than the one it is used with."""


@dataclass
class ModelProfile:
    """(s, f) for one model (by fingerprint), the reason, the rule and a summary of the curves."""

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
        """The profile's layers as a :class:`~sasa.layers.LayerSelection` (engine-ready)."""
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

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename)."""
        if self.created_at is None:
            self.created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not self.versions:
            import torch
            import transformers

            import sasa

            self.versions = {"sasa": sasa.__version__, "torch": torch.__version__,
                             "transformers": transformers.__version__}
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, expect_fingerprint: dict | None = None) -> "ModelProfile":
        """Read a profile; with ``expect_fingerprint``, refuse one made for another model."""
        p = Path(path)
        if p.is_dir():
            p = p / "profile.json"
        if not p.is_file():
            raise ProfileError(f"model profile not found: {p} (write one with `sasa analyze --out DIR`)")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{p}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
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
        if expect_fingerprint is not None:
            prof.check_model(expect_fingerprint, source=str(p))
        prof.selection().resolve(int(prof.fingerprint.get("num_layers", prof.fused + 1)))
        return prof

    def check_model(self, fingerprint: dict, source: str = "profile") -> None:
        """Raise :class:`ProfileMismatchError` naming every field where the model differs."""
        diffs = fingerprint_differences(self.fingerprint, fingerprint, "profile")
        if diffs:
            raise ProfileMismatchError(f"{source} was made for another model ({self.model or '?'}): "
                                       + "; ".join(diffs) + ". Run `sasa analyze` on this model.")
