"""Choose the safety layer s and the fused layer f from per-block curves, with the reason in words.

The rule (every number is a field of :class:`SelectionRule`; defaults in brackets):

**s - where safety is perceived.**

1. Candidate blocks: the band ``safety_band`` [(0.25, 0.75)] of the depth, i.e. blocks
   round(0.25 (L-1)) .. round(0.75 (L-1)), never past L-2 so an f > s exists; ``min_safety_layer``
   / ``max_safety_layer`` override either end. Why a band: the first blocks already separate
   harmful from benign prompts on word identity alone (on HarmBench-vs-benign text SmolLM2's d'
   is at its highest by block 1), which is lexical, not perception, and the last blocks format
   the output; the paper's safety layers sit mid-depth (LLaVA-1.5-7B: 13 of 32). If head
   ablation ran and ``use_heads`` [on], only the blocks holding one of the ``top_heads`` [5] most
   safety-specific heads *of the search range* (safety angle minus utility angle, > 0) stay
   candidates; if none qualifies, all blocks in range stay, and the reason says so.
2. The safety curve is ``safety_metric`` [``probe_dprime``: held-out separation of harmful and
   benign probe scores, which keeps rising after AUROC has saturated at 1; ``probe_auroc`` and
   ``probe_accuracy`` can be chosen].
3. Peak = the curve's maximum over the candidates. s = the *earliest* candidate whose value is
   within ``safety_tolerance`` [5 %] of the peak, measured from the metric's chance level
   (0 for d', 0.5 for AUROC / accuracy): the first block that already sees (almost) all the
   safety signal the model will ever linearly expose. Earliest, because SASA projects the state
   of block s onto block f, and blocks after the peak are the ones it must steer.

**f - where the meaning is complete.**

4. The semantic curve is the first available of ``fused_metrics`` [cross-modal agreement (image
   carrying a text vs the same text as text), then category-probe accuracy, then logit-lens
   readability]. A curve is available when it was measured and has a finite value after s.
5. Over blocks s+1 .. min(L-1, s + ``max_gap``) [no cap], let *hi* be the curve's maximum there and
   *lo* its minimum over blocks 0 .. that range's end. f = the first block after s reaching
   lo + ``saturation`` [90 %] x (hi - lo): where the semantic curve saturates.
6. If no semantic curve is available, or it is flat (hi - lo <= 1e-9), f = s + ``fallback_gap``
   [round(2/32 x L), at least 1: LLaVA-1.5-7B's f - s = 2 of 32 blocks, scaled], capped at L-1.

Refusal emergence (alignment for linguistic expression) is reported in the reason, not used.
Indices are 0-based blocks (``sasa.engine.layers``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

SAFETY_METRICS = ("probe_dprime", "probe_auroc", "probe_accuracy")
FUSED_METRICS = ("crossmodal_agreement", "category_accuracy", "readability")
CHANCE = {"probe_dprime": 0.0, "probe_auroc": 0.5, "probe_accuracy": 0.5}
DESCRIBE = {
    "probe_dprime": "held-out probe separation (d')",
    "probe_auroc": "cross-validated probe AUROC",
    "probe_accuracy": "cross-validated probe accuracy",
    "crossmodal_agreement": "cross-modal agreement (matched minus mismatched cosine)",
    "category_accuracy": "category-probe accuracy",
    "readability": "logit-lens readability",
}


class SelectionError(ValueError):
    """The curves cannot support a choice (too few blocks, no safety curve)."""


@dataclass(frozen=True)
class SelectionRule:
    """The knobs of the (s, f) rule; see the module doc for what each does."""

    safety_metric: str = "probe_dprime"
    safety_tolerance: float = 0.05
    safety_band: tuple[float, float] = (0.25, 0.75)
    use_heads: bool = True
    top_heads: int = 5
    min_safety_layer: int | None = None
    max_safety_layer: int | None = None
    fused_metrics: tuple[str, ...] = FUSED_METRICS
    saturation: float = 0.9
    max_gap: int | None = None
    fallback_gap: int | None = None

    def __post_init__(self) -> None:
        if self.safety_metric not in SAFETY_METRICS:
            raise ValueError(f"safety_metric must be one of {SAFETY_METRICS}, got {self.safety_metric!r}")
        bad = [m for m in self.fused_metrics if m not in FUSED_METRICS]
        if bad:
            raise ValueError(f"fused_metrics must be drawn from {FUSED_METRICS}, got {bad}")
        if not 0.0 <= self.safety_tolerance < 1.0:
            raise ValueError("safety_tolerance must be in [0, 1)")
        if not 0.0 < self.saturation <= 1.0:
            raise ValueError("saturation must be in (0, 1]")
        lo, hi = self.safety_band
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"safety_band must be 0 <= low <= high <= 1, got {self.safety_band}")
        if self.top_heads < 1:
            raise ValueError("top_heads must be >= 1")
        for name in ("max_gap", "fallback_gap"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fused_metrics"] = list(self.fused_metrics)
        d["safety_band"] = list(self.safety_band)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SelectionRule":
        d = dict(d)
        for key in ("fused_metrics", "safety_band"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Selection:
    """The chosen (s, f), 0-based, the reason in words and the numbers behind it."""

    safety: int
    fused: int
    reason: str
    details: dict = field(default_factory=dict)
    rule: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _blocks(xs: Sequence[int]) -> str:
    xs = list(xs)
    return ", ".join(map(str, xs)) if len(xs) <= 12 else f"{xs[0]}..{xs[-1]} ({len(xs)} blocks)"


def select_layers(
    curves: Mapping[str, Sequence[float] | None],
    num_layers: int,
    *,
    heads: Mapping[str, Any] | None = None,
    refusal_emergence: int | None = None,
    rule: SelectionRule | None = None,
) -> Selection:
    """Apply the documented rule (module doc) to per-block ``curves`` of a ``num_layers``-block model.

    curves: name -> length-L list (NaN / None where not measured); names as in
    :data:`SAFETY_METRICS` and :data:`FUSED_METRICS`. heads: :func:`sasa.analysis.heads.summarize_heads`
    output (its ``ranked`` list), or None when head ablation did not run.
    """
    rule = rule or SelectionRule()
    L = int(num_layers)
    if L < 2:
        raise SelectionError(f"choosing s < f needs at least 2 blocks, this model has {L}")
    for name, c in curves.items():
        if c is not None and len(c) != L:
            raise SelectionError(f"curve {name!r} has {len(c)} values for a {L}-block model")
    safety = curves.get(rule.safety_metric)
    if safety is None or not any(_finite(v) for v in safety):
        raise SelectionError(f"no {rule.safety_metric} curve to choose the safety layer from")
    details: dict[str, Any] = {"num_layers": L, "safety_metric": rule.safety_metric}
    notes: list[str] = []

    # --- s ------------------------------------------------------------------------------------
    lo_s = round(rule.safety_band[0] * (L - 1)) if rule.min_safety_layer is None else rule.min_safety_layer
    hi_s = round(rule.safety_band[1] * (L - 1)) if rule.max_safety_layer is None else rule.max_safety_layer
    lo_s, hi_s = max(0, min(lo_s, L - 2)), min(hi_s, L - 2)
    in_range = [i for i in range(lo_s, hi_s + 1) if _finite(safety[i])]
    details["safety_range"] = [lo_s, hi_s]
    if not in_range:
        raise SelectionError(f"no measured {rule.safety_metric} value in the search range, blocks {lo_s}..{hi_s}")
    candidates = in_range
    head_text = ""
    if heads is not None and rule.use_heads:
        ranked = [h for h in heads.get("ranked", []) if h.get("layer") in in_range and _finite(h.get("specific"))]
        top = [h for h in ranked if h["specific"] > 0][:rule.top_heads]
        details["top_heads"] = top
        head_layers = sorted({h["layer"] for h in top})
        if head_layers:
            candidates = head_layers
            if len(top) == rule.top_heads:
                which = f"one of its {len(top)} most safety-specific attention heads"
            elif len(top) == 1:
                which = (f"the only one of its {len(ranked)} ablated heads that matters more for harmful than for "
                         "benign prompts")
            else:
                which = (f"one of the only {len(top)} of its {len(ranked)} ablated heads that matter more for "
                         "harmful than for benign prompts")
            head_text = (f" among blocks {_blocks(head_layers)}, the blocks of the search range {lo_s}..{hi_s} "
                         f"holding {which} (block.head: "
                         f"{', '.join(str(h['layer']) + '.' + str(h['head']) for h in top)})")
        else:
            notes.append("no ablated head was more important for harmful than for benign prompts inside the "
                         "search range, so every block was a candidate for s")
    details["safety_candidates"] = candidates
    peak = max(safety[i] for i in candidates)
    peak_at = next(i for i in candidates if safety[i] == peak)
    chance = CHANCE[rule.safety_metric]
    threshold = peak - rule.safety_tolerance * (peak - chance) if peak > chance else peak
    s = next(i for i in candidates if safety[i] >= threshold)
    details.update({"safety_peak": peak, "safety_peak_layer": peak_at, "safety_threshold": threshold})
    where = head_text or f" in the search range {lo_s}..{hi_s}"
    s_text = (f"s = {s}: {DESCRIBE[rule.safety_metric]} peaks at {peak:.3g} in block {peak_at}{where}; "
              f"block {s} is the earliest within {rule.safety_tolerance:.0%} of that peak "
              f"(>= {threshold:.3g}, chance {chance:g}).")

    # --- f ------------------------------------------------------------------------------------
    end = L - 1 if rule.max_gap is None else min(L - 1, s + rule.max_gap)
    after = list(range(s + 1, end + 1))
    used = None
    skipped = []
    for name in rule.fused_metrics:
        c = curves.get(name)
        if c is not None and any(_finite(c[i]) for i in after):
            used = name
            break
        skipped.append(f"{DESCRIBE[name]} was not measured" if c is None else
                       f"{DESCRIBE[name]} has no value after block {s}")
    if used is not None and skipped:
        notes.append(f"The semantic curve for f is {DESCRIBE[used]}, the first available in the rule's order: "
                     + "; ".join(skipped))
    f: int
    if used is not None:
        c = curves[used]
        hi = max(c[i] for i in after if _finite(c[i]))
        lo = min(c[i] for i in range(0, end + 1) if _finite(c[i]))
        details.update({"fused_metric": used, "fused_high": hi, "fused_low": lo})
        if hi - lo > 1e-9:
            target = lo + rule.saturation * (hi - lo)
            f = next(i for i in after if _finite(c[i]) and c[i] >= target)
            details["fused_threshold"] = target
            f_text = (f"f = {f}: {DESCRIBE[used]} over blocks {s + 1}..{end} rises to {hi:.3g} (floor {lo:.3g}); "
                      f"block {f} is the first after s to reach {rule.saturation:.0%} of that rise (>= {target:.3g}).")
        else:
            used = None
            notes.append(f"{DESCRIBE[details['fused_metric']]} is flat after block {s}")
    if used is None:
        gap = rule.fallback_gap if rule.fallback_gap is not None else max(1, round(2 * L / 32))
        f = min(L - 1, s + gap)
        details["fused_metric"] = None
        why = f" ({'; '.join(skipped)})" if skipped else ""
        f_text = (f"f = {f}: no usable semantic curve{why}, so f = s + {gap} (LLaVA-1.5-7B's f - s = 2 of 32 blocks, "
                  f"scaled to {L} blocks){', capped at the last block' if s + gap > L - 1 else ''}.")
    if refusal_emergence is not None:
        notes.append(f"refusal wording emerges (logit lens, harmful minus benign) at block {refusal_emergence}")
    details["refusal_emergence"] = refusal_emergence
    details["notes"] = notes
    reason = " ".join([s_text, f_text] + [n[0].upper() + n[1:] + "." for n in notes])
    return Selection(s, f, reason, details, rule.to_dict())
