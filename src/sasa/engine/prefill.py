"""Pass 2 and the plain tail, run on what the tap recorded during the model's own prefill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from sasa.engine.interception import LayerTap
from sasa.engine.plan import FeatureSpec, PassPlan
from sasa.models.adapters import Adapter
from sasa.engine.projection import ProjectionConfig, apply_projection, position_mask


@dataclass
class PrefillResult:
    """What one guarded prefill produced, all on CPU in float32, one row per prompt."""

    features: torch.Tensor
    logits_projected: torch.Tensor | None = None
    logits_vanilla: torch.Tensor | None = None
    captured: dict[int, torch.Tensor] = field(default_factory=dict)
    prompt_lengths: list[int] = field(default_factory=list)


def augmented_pass(adapter: Adapter, tap: LayerTap, plan: PassPlan, projection: ProjectionConfig,
                   features: FeatureSpec, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   cache: Any, capture_layers: Sequence[int]) -> tuple[PrefillResult, torch.Tensor | None]:
    """Eq. 8 on block s's pass-1 state, blocks s+1..last_augmented on it (filling ``cache``), and
    the features; returns the result and pass 2's last-position logits [B, 1, V] when it reached the head."""
    s, f, feat = plan.s, plan.f, features
    attn = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    logits_projected = feature = head_logits = None
    feature_at_s = feat.kind == "hidden" and feat.projected and feat.layer == s
    if plan.last_augmented is not None or feature_at_s:
        pos = position_mask(projection, attn, adapter.image_mask(input_ids))
        h = apply_projection(tap.outputs[s], tap.outputs[f], projection, pos)
        if feature_at_s:
            feature = h[:, -1]
        last = plan.last_augmented if plan.last_augmented is not None else s
        for j in range(s + 1, last + 1):
            h = tap.run_block(j, h, cache)
            if feat.kind == "hidden" and feat.projected and feat.layer == j:
                feature = h[:, -1]
        if plan.augmented_logits:
            head_logits = adapter.logits_from_hidden(h)
            logits_projected = head_logits[:, -1].float().cpu()
    logits_vanilla = None
    if plan.plain_logits:
        logits_vanilla = adapter.logits_from_hidden(tap.outputs[plan.last_plain])[:, -1].float().cpu()
    if feat.kind == "logits":
        feature = logits_projected if feat.projected else logits_vanilla
    elif feature is None:
        feature = tap.outputs[feat.layer][:, -1]
    # copies, not views: a view of the last position keeps the whole [B, T, D] state alive, which over
    # a dataset of kept features (a layer per captured block) grew to gigabytes
    captured = {k: tap.outputs[k][:, -1].to("cpu", torch.float32, copy=True) for k in capture_layers}
    result = PrefillResult(feature.to("cpu", torch.float32, copy=True), logits_projected, logits_vanilla, captured,
                           attn.sum(-1).tolist())
    return result, head_logits


def finish_plain(adapter: Adapter, tap: LayerTap, plan: PassPlan, cache: Any) -> torch.Tensor:
    """Run the blocks pass 1 skipped, completing the plain cache; return its last-position logits [B, 1, V]."""
    h = tap.outputs[plan.last_plain]
    for j in range(plan.last_plain + 1, plan.num_layers):
        h = tap.run_block(j, h, cache)
    return adapter.logits_from_hidden(h)
