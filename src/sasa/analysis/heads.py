"""Attention-head importance by ablation (Ships-style: Zhou et al. 2024, arXiv 2410.13708).

For one head: zero its output, run the prompts, take the final block's last-token states ``[n, d]``
and measure the principal angle between their leading singular direction and the unablated one
(:func:`sasa.analysis.curves.principal_angle`). Done once on a safety set (harmful prompts) and
once on a utility set (benign prompts): a head whose removal moves the harmful prompts'
representation but not the benign ones' is *safety-specific*; the blocks holding the most
safety-specific heads are where the model's safety perception is carried, and the candidates
for the safety layer s.

How a head is zeroed: a forward pre-hook on the block's attention output projection (``o_proj``)
multiplies its input by a mask that is 0 on that head's slice ``[h * head_dim, (h + 1) * head_dim)``
and 1 elsewhere. The input of ``o_proj`` is the concatenation of the heads' outputs, so this removes
exactly that head's contribution at every position and nothing else.

Cost: ``(1 + number of heads) * ceil(n / batch_size)`` forwards; ``max_samples`` caps n per set
and ``layers`` / ``heads`` restrict which heads are ablated. Results are appended to a JSONL file
as each head finishes, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sasa.analysis.activations import last_token_states
from sasa.analysis.curves import principal_angle
from sasa.data.sample import Sample
from sasa.engine import plain_engine
from sasa.engine.samples import batches
from sasa.models.adapters import Adapter
from sasa.models.capture import edit_input
from sasa.models.compat import execution_device
from sasa.store.records import append_records, read_records

logger = logging.getLogger(__name__)

class HeadAblationError(ValueError):
    """The model's attention layout is not one heads can be ablated in; the message names the block."""


def attention_output(adapter: Adapter, layer: int) -> nn.Linear:
    """The linear layer that maps the concatenated head outputs of block ``layer`` to the residual
    stream, found by the adapter spec's ``attention_output_paths``."""
    try:
        return adapter.attention_output(layer)
    except LookupError as exc:
        raise HeadAblationError(str(exc)) from None


def head_layout(adapter: Adapter) -> tuple[int, int]:
    """(number of query heads, head dimension), checked against block 0's output projection."""
    cfg = adapter.text_config
    n_heads = int(getattr(cfg, "num_attention_heads"))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    width = attention_output(adapter, 0).in_features
    if width != n_heads * head_dim:
        raise HeadAblationError(f"attention output projection takes {width} inputs, but the config says "
                                f"{n_heads} heads x {head_dim} dims; cannot locate head slices")
    return n_heads, int(head_dim)


@contextmanager
def ablate_head(adapter: Adapter, layer: int, head: int) -> Iterator[None]:
    """Zero head ``head`` of block ``layer`` for the duration of the ``with`` block (module doc)."""
    n_heads, head_dim = head_layout(adapter)
    if not 0 <= head < n_heads:
        raise HeadAblationError(f"head {head} out of range 0..{n_heads - 1}")
    proj = attention_output(adapter, layer)
    mask = torch.ones(proj.in_features, dtype=proj.weight.dtype, device=execution_device(proj))
    mask[head * head_dim:(head + 1) * head_dim] = 0

    with edit_input(proj, lambda x: x * mask.to(x.device)):
        yield


def _final_states(engine: Any, samples: Sequence[Sample], batch_size: int) -> np.ndarray:
    L = engine.adapter.num_layers
    out = [last_token_states(engine, chunk, [L - 1])[0][:, 0].numpy() for chunk in batches(list(samples), batch_size)]
    return np.concatenate(out).astype(np.float64)


def select_capped(samples: Sequence[Sample], label: str, cap: int | None, seed: int) -> list[Sample]:
    """Up to ``cap`` samples of ``label``, a seeded random choice kept in input order."""
    pool = [s for s in samples if s.label == label]
    if cap is not None and len(pool) > cap:
        keep = set(np.random.default_rng(seed).choice(len(pool), size=cap, replace=False).tolist())
        pool = [s for i, s in enumerate(pool) if i in keep]
    return pool


def head_importance(
    adapter: Adapter,
    samples: Sequence[Sample],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_samples: int | None = 16,
    batch_size: int = 8,
    seed: int = 0,
    records_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Safety and utility importance of each (block, head); see the module doc.

    samples: labelled prompts; harmful ones form the safety set, benign ones the utility set
    (``max_samples`` each, seeded). Returns ``angle_safety`` / ``angle_utility`` ``[L, H]`` in
    degrees (NaN for heads not ablated), ``specific`` = safety minus utility, the per-block maximum
    of ``specific`` as ``layer_score`` and the heads ranked by ``specific``.
    """
    L = adapter.num_layers
    n_heads, _ = head_layout(adapter)
    layers = list(range(L)) if layers is None else sorted(set(int(x) for x in layers))
    heads = list(range(n_heads)) if heads is None else sorted(set(int(x) for x in heads))
    for x in layers:
        if not 0 <= x < L:
            raise HeadAblationError(f"head-ablation block {x} out of range 0..{L - 1}")
    for h in heads:
        if not 0 <= h < n_heads:
            raise HeadAblationError(f"head {h} out of range 0..{n_heads - 1}")
    safety = select_capped(samples, "harmful", max_samples, seed)
    utility = select_capped(samples, "benign", max_samples, seed)
    if len(safety) < 2 or len(utility) < 2:
        raise ValueError(f"head ablation needs at least 2 harmful and 2 benign samples, got {len(safety)} and "
                         f"{len(utility)}")
    both = safety + utility
    config_key = hashlib.sha256(json.dumps({"ids": [s.id for s in both], "fp": adapter.fingerprint()},
                                           sort_keys=True).encode()).hexdigest()[:16]
    done: dict[tuple[int, int], dict] = {}
    if records_path is not None:
        for rec in read_records(records_path):
            if rec.get("config") == config_key:
                done[(rec["layer"], rec["head"])] = rec
        stale = len(read_records(records_path, repair=False)) - len(done)
        if stale:
            logger.warning("%s: ignoring %d head results made with other samples or another model", records_path,
                           stale)
    ns = len(safety)
    todo = [(x, h) for x in layers for h in heads if (x, h) not in done]
    engine = plain_engine(adapter)
    base = _final_states(engine, both, batch_size) if todo else None
    logger.info("head ablation: %d heads to ablate (%d done), %d safety + %d utility prompts, %d forwards",
                len(todo), len(done), len(safety), len(utility), len(todo) * -(-len(both) // batch_size))
    for x, h in tqdm(todo, desc="head ablation", unit="head", disable=not progress):
        with ablate_head(adapter, x, h):
            st = _final_states(engine, both, batch_size)
        rec = {"id": f"L{x}H{h}", "layer": x, "head": h, "config": config_key,
               "angle_safety": principal_angle(base[:ns], st[:ns]),
               "angle_utility": principal_angle(base[ns:], st[ns:])}
        done[(x, h)] = rec
        if records_path is not None:
            append_records(records_path, [rec])
    a_s = np.full((L, n_heads), np.nan)
    a_u = np.full((L, n_heads), np.nan)
    for (x, h), rec in done.items():
        if x in layers and h in heads:
            a_s[x, h], a_u[x, h] = rec["angle_safety"], rec["angle_utility"]
    return summarize_heads(a_s, a_u, n_safety=len(safety), n_utility=len(utility))


def summarize_heads(angle_safety: np.ndarray, angle_utility: np.ndarray, **extra: Any) -> dict[str, Any]:
    """Per-block and ranked views of ``[L, H]`` safety / utility angles (NaN = not ablated)."""
    spec = angle_safety - angle_utility
    L = spec.shape[0]
    layer_score = [float(np.nanmax(spec[x])) if np.isfinite(spec[x]).any() else float("nan") for x in range(L)]
    ranked = sorted(((float(spec[x, h]), x, h) for x in range(L) for h in range(spec.shape[1])
                     if np.isfinite(spec[x, h])), reverse=True)
    return {
        "angle_safety": angle_safety.tolist(), "angle_utility": angle_utility.tolist(), "specific": spec.tolist(),
        "layer_score": layer_score,
        "ranked": [{"layer": x, "head": h, "specific": s, "angle_safety": float(angle_safety[x, h]),
                    "angle_utility": float(angle_utility[x, h])} for s, x, h in ranked],
        **extra,
    }
