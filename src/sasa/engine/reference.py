"""The naive SASA definition: two full forwards with hooks. Slow on purpose; used to test the engine.

Pass 1 runs the whole model and keeps the outputs of blocks s and f. Pass 2 runs the whole model
again with a hook that swaps block s's output for its projection onto block f's. Both passes go
through ``generate``'s own prefill (one new token) so left padding is treated as in generation.
"""

from __future__ import annotations

from typing import Any

import torch

from sasa.models.adapters import Adapter
from sasa.models import capture as hooks
from sasa.engine.projection import ProjectionConfig, apply_projection, position_mask


def _first_step(model: Any, inputs: dict, **kw: Any) -> Any:
    return model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, **kw)


@torch.inference_mode()
def block_outputs(adapter: Adapter, inputs: dict, layers: list[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Full plain prefill; return {block: output [B,T,D]} and last-position logits [B,V]."""
    with hooks.capture(adapter, layers) as kept:
        out = _first_step(adapter.model, inputs)
    return dict(kept), out.logits[0].float()


@torch.inference_mode()
def naive_projected_logits(adapter: Adapter, inputs: dict, s: int, f: int,
                           projection: ProjectionConfig | None = None,
                           capture: list[int] | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Last-position logits [B,V] of the SASA-augmented model, and last-token outputs of ``capture`` blocks."""
    projection = projection or ProjectionConfig()
    kept, _ = block_outputs(adapter, inputs, [s, f])
    pos = position_mask(projection, inputs["attention_mask"], adapter.image_mask(inputs["input_ids"]))
    new_s = apply_projection(kept[s], kept[f], projection, pos)
    with hooks.replace_output(adapter.layers[s], lambda h: new_s), \
            hooks.capture(adapter, capture or [], last_position=True) as captured:
        out = _first_step(adapter.model, inputs)
    return out.logits[0].float(), dict(captured)


@torch.inference_mode()
def naive_augmented_generate(adapter: Adapter, inputs: dict, s: int, f: int,
                             projection: ProjectionConfig | None = None, **generate_kwargs: Any) -> torch.Tensor:
    """Generate from the augmented model: block s's prompt states projected during the prefill only."""
    projection = projection or ProjectionConfig()
    kept, _ = block_outputs(adapter, inputs, [s, f])
    pos = position_mask(projection, inputs["attention_mask"], adapter.image_mask(inputs["input_ids"]))
    new_s = apply_projection(kept[s], kept[f], projection, pos)
    prompt_len = inputs["input_ids"].shape[1]
    with hooks.replace_output(adapter.layers[s], lambda h: new_s if h.shape[1] == prompt_len else None):
        return adapter.model.generate(**inputs, do_sample=False, **generate_kwargs)


def grow_inputs(inputs: dict, next_ids: torch.Tensor) -> dict:
    """``inputs`` with one more (text) token per row appended: ids, mask and per-token type ids."""
    grown = dict(inputs)
    grown["input_ids"] = torch.cat([inputs["input_ids"], next_ids[:, None]], dim=1)
    grown["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(inputs["attention_mask"][:, :1])],
                                        dim=1)
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in inputs:
            grown[key] = torch.cat([inputs[key], torch.zeros_like(inputs[key][:, :1])], dim=1)
    return grown


@torch.inference_mode()
def naive_projected_decoding(adapter: Adapter, inputs: dict, s: int, f: int, max_new_tokens: int,
                             projection: ProjectionConfig | None = None) -> torch.Tensor:
    """Greedy decoding where every step recomputes both full passes over prompt + generated tokens,
    projecting block s at every position (generated ones included)."""
    projection = projection or ProjectionConfig()
    model = adapter.model
    eos = model.generation_config.eos_token_id
    device = inputs["input_ids"].device
    eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=device)
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else getattr(adapter.tokenizer, "pad_token_id", None) or 0
    current = dict(inputs)
    done = torch.zeros(inputs["input_ids"].shape[0], dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        logits, _ = naive_projected_logits(adapter, current, s, f, projection)
        logits = logits.to(device)
        nxt = torch.where(done, torch.full_like(logits[:, 0], pad, dtype=torch.long), logits.argmax(-1))
        done = done | torch.isin(nxt, eos_ids)
        current = grow_inputs(current, nxt)
        if bool(done.all()):
            break
    return current["input_ids"]
