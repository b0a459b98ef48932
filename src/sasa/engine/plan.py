"""What the engine must compute for a request, decided before any block runs.

Pass 1 is the plain forward, pass 2 the projected one (block s's state replaced by Eq. 8, blocks
s+1.. re-run on it). Each stops at the last block whose output is needed, so a risk score costs
blocks 0..f of pass 1 and s+1..L-1 of pass 2, and a hidden-state feature below L-1 stops earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

FEATURE_KINDS = ("logits", "hidden")


@dataclass(frozen=True)
class FeatureSpec:
    """What the probe reads at the last prompt position.

    kind: ``logits`` (paper: next-token logits) or ``hidden`` (the output of block ``layer``).
    projected: read it from the SASA-augmented pass (paper) or from the plain forward.
    layer: 0-based block index, for ``hidden``.
    """

    kind: str = "logits"
    projected: bool = True
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.kind == "hidden" and self.layer is None:
            raise ValueError("feature kind 'hidden' needs a layer index")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "projected": self.projected, "layer": self.layer}


@dataclass(frozen=True)
class PassPlan:
    """The blocks each pass runs and the outputs pass 1 keeps.

    last_plain: the last block pass 1 computes (later blocks return their input untouched).
    last_augmented: the last block pass 2 computes, or None when no projected pass is needed.
    keep: blocks whose pass-1 outputs are kept (s, f, the captured ones, the feature's).
    """

    num_layers: int
    s: int
    f: int
    last_plain: int
    last_augmented: int | None
    keep: frozenset[int]

    @property
    def record_from(self) -> int:
        """Pass 2 re-runs blocks from s+1 with pass 1's recorded call arguments."""
        return self.s + 1

    @property
    def skips_plain_tail(self) -> bool:
        return self.last_plain < self.num_layers - 1

    @property
    def plain_logits(self) -> bool:
        return self.last_plain == self.num_layers - 1

    @property
    def augmented_logits(self) -> bool:
        return self.last_augmented == self.num_layers - 1


def plan_passes(num_layers: int, s: int, f: int, features: FeatureSpec, capture_layers: Sequence[int] = (),
                need_plain_logits: bool = False, augment: bool = False) -> PassPlan:
    """The cheapest pair of passes that yields the features, the captured layers and, when asked,
    the plain logits (``need_plain_logits``) or the full projected pass to decode from (``augment``)."""
    L = num_layers
    last_plain = f
    for k in capture_layers:
        if not 0 <= k < L:
            raise ValueError(f"capture layer {k} out of range 0..{L - 1}")
        last_plain = max(last_plain, k)
    if features.kind == "hidden" and (not features.projected or features.layer <= s):
        last_plain = max(last_plain, features.layer)
    if need_plain_logits or (features.kind == "logits" and not features.projected):
        last_plain = L - 1
    last_augmented: int | None = None
    if augment or (features.kind == "logits" and features.projected):
        last_augmented = L - 1
    elif features.kind == "hidden" and features.projected and features.layer > s:
        last_augmented = features.layer
    keep = {s, f, last_plain, *capture_layers}
    if features.kind == "hidden":
        keep.add(features.layer)
    return PassPlan(L, s, f, last_plain, last_augmented, frozenset(keep))
