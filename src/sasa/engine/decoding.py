"""Decoding after a guarded prefill: refused rows stop at once, and sasa's projected decoder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from sasa.engine.interception import Handoff, LayerTap, idle_head
from sasa.engine.plan import PassPlan
from sasa.engine.prefill import PrefillResult
from sasa.models import compat
from sasa.models.adapters import Adapter
from sasa.engine.projection import ProjectionConfig, apply_projection, position_mask


@dataclass
class GenerationResult:
    """Per prompt: generated token ids (empty when refused before generation) and text."""

    token_ids: list[list[int]]
    texts: list[str]
    refused: list[bool]
    prefill: PrefillResult | None
    sequences: torch.Tensor | None = None


class RowsDone(StoppingCriteria):
    """Marks refused rows as finished right after their first token."""

    def __init__(self) -> None:
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.done is None:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.done.to(input_ids.device)


class StepClock(StoppingCriteria):
    """Notes when each decoding step ends and stops nothing, so each row gets its own latency: the
    time from ``start`` to its last token (a batch's rows finish at different steps)."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def latencies(self, token_ids: Sequence[Sequence[int]], refused: Sequence[bool] | None = None,
                  decided_at: float | None = None) -> list[float]:
        """Seconds from ``start`` to each row's end: a refused row's at the decision, an answered
        row's at the step of its last kept token (an end-of-text that is also the pad token is not
        kept, so such a row reads one step early)."""
        end = time.perf_counter()
        out = []
        for k, row in enumerate(token_ids):
            if refused is not None and refused[k] and decided_at is not None:
                out.append(decided_at - self.start)
            elif row and self.times:
                out.append(self.times[min(len(row), len(self.times)) - 1] - self.start)
            else:
                out.append(end - self.start)
        return out


def generated_rows(tokenizer: Any, sequences: torch.Tensor, prompt_len: int,
                   refused: list[bool]) -> tuple[list[list[int]], list[str]]:
    """The new token ids of each row (right padding dropped; none for a refused row) and their text."""
    pad = getattr(tokenizer, "pad_token_id", None)
    ids, texts = [], []
    for row, r in zip(sequences[:, prompt_len:].cpu().tolist(), refused):
        if r:
            ids.append([])
            texts.append("")
            continue
        while row and pad is not None and row[-1] == pad:
            row = row[:-1]
        ids.append(row)
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return ids, texts


@torch.inference_mode()
def generate_plain(adapter: Adapter, inputs: dict, max_new_tokens: int, clock: StepClock | None = None,
                   **generate_kwargs: Any) -> tuple[list[list[int]], list[str]]:
    """The one plain-generation path (``vanilla``, a detector's passing prompts, the baselines):
    the model's own ``generate`` on encoded inputs, greedy unless asked; new token ids and text.
    ``clock`` times each row's end."""
    generate_kwargs.setdefault("do_sample", False)
    if clock is not None:
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [*(generate_kwargs.get("stopping_criteria") or []), clock])
    seqs = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    return generated_rows(adapter.tokenizer, seqs, inputs["input_ids"].shape[1], [False] * seqs.shape[0])


@torch.inference_mode()
def decode_projected(adapter: Adapter, plan: PassPlan, projection: ProjectionConfig, input_ids: torch.Tensor,
                     handoff: Handoff, refused: torch.Tensor, max_new_tokens: int,
                     criteria: StoppingCriteriaList | None = None) -> torch.Tensor:
    """Greedy decoding with Eq. 8 at every generated position; ``criteria`` are asked after every
    step, as ``generate`` asks them.

    Each step prepares its inputs and updates its state with the model's own generation helpers
    (``prepare_inputs_for_generation`` / ``_update_model_kwargs_for_generation``, via
    :mod:`sasa.models.compat`), as ``generate`` does, runs blocks 0..f on the plain cache and
    s+1..L-1 on the augmented one.
    """
    model, L, s, f = adapter.model, plan.num_layers, plan.s, plan.f
    plain = compat.find_cache(handoff.model_kwargs)
    augmented = handoff.augmented_cache
    if plain is None or augmented is None:
        raise RuntimeError("projected decoding needs the model to use a KV cache")
    # The plain pass never runs blocks past f, but masks are sized from the cache's layers
    # (a model's full-attention mask may read a block past f): let them see the augmented ones.
    compat.copy_cache_layers(plain, augmented, range(f + 1, L))
    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else getattr(adapter.tokenizer, "pad_token_id", None) or 0
    model_kwargs = compat.next_step_kwargs(model, handoff.outputs, dict(handoff.model_kwargs))
    seqs = input_ids
    done = refused.to(seqs.device).clone()
    logits = handoff.logits[:, -1]
    for step in range(max_new_tokens):
        nxt = torch.where(done, torch.full_like(seqs[:, 0], pad), logits.argmax(-1))
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        done = done | torch.isin(nxt, eos_ids.to(nxt.device))
        if criteria is not None:
            done = done | criteria(seqs, None).to(done.device)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        step_inputs = compat.step_inputs(model, seqs, model_kwargs)
        with LayerTap(adapter.layers, s + 1, {s, f}, f) as tap, idle_head(adapter.unembedding, True):
            outputs = model(**step_inputs, return_dict=True)
        model_kwargs = compat.next_step_kwargs(model, outputs, model_kwargs)
        ones = torch.ones_like(nxt[:, None])
        mask = position_mask(projection, ones, adapter.image_mask(nxt[:, None]))
        h = apply_projection(tap.outputs[s], tap.outputs[f], projection, mask)
        for j in range(s + 1, L):
            h = tap.run_block(j, h, augmented)
        logits = adapter.logits_from_hidden(h)[:, -1]
    return seqs
