"""Which decoder blocks play the safety (s) and fused-semantics (f) roles, and how indices are counted.

Convention: index ``i`` (0-based, the default) names the *output* of decoder block ``i``, i.e.
``hidden_states[i + 1]`` of a Hugging Face forward with ``output_hidden_states=True``. The paper
does not say which convention it uses; the unofficial LLaVA-1.5-7B reproduction's s=13, f=15 are
0-based blocks. ``indexing="1-based"`` reads ``s=14, f=16`` as the same two blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEXINGS = ("0-based", "1-based")


class LayerSelectionError(ValueError):
    """Layer indices that do not fit the model."""


@dataclass(frozen=True)
class LayerSelection:
    """The safety layer s and the fused layer f, as the user wrote them."""

    safety: int
    fused: int
    indexing: str = "0-based"

    def __post_init__(self) -> None:
        if self.indexing not in INDEXINGS:
            raise LayerSelectionError(f"indexing must be one of {INDEXINGS}, got {self.indexing!r}")

    def resolve(self, num_layers: int) -> tuple[int, int]:
        """Return 0-based (s, f), checking 0 <= s < f < num_layers."""
        offset = 1 if self.indexing == "1-based" else 0
        s, f = self.safety - offset, self.fused - offset
        lo, hi = offset, num_layers - 1 + offset
        for name, raw, value in (("safety layer s", self.safety, s), ("fused layer f", self.fused, f)):
            if not 0 <= value < num_layers:
                raise LayerSelectionError(
                    f"{name}={raw} is out of range: this model has {num_layers} decoder blocks, "
                    f"valid {self.indexing} indices are {lo}..{hi}"
                )
        if s >= f:
            raise LayerSelectionError(
                f"the safety layer must come before the fused layer (s < f), got s={self.safety}, f={self.fused}"
            )
        return s, f

    def to_dict(self) -> dict:
        return {"safety": self.safety, "fused": self.fused, "indexing": self.indexing}


def default_layers(num_layers: int) -> LayerSelection:
    """A fallback (s, f) scaled from LLaVA-1.5-7B's 13/15 of 32 blocks, for models without a profile."""
    s = max(0, round(num_layers * 13 / 32))
    f = max(s + 1, round(num_layers * 15 / 32))
    if f >= num_layers:
        f = num_layers - 1
        s = max(0, f - 1)
    return LayerSelection(s, f)
