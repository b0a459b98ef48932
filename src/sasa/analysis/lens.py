"""Logit lens on cached states: read every block's last-token state through the model's own final
norm and unembedding, as if the model stopped there (nostalgebraist 2020).

Definitions (documented here because the curves depend on them):

* **readable token**: a vocabulary entry whose decoded text, with surrounding whitespace removed,
  is alphabetic (``str.isalpha``: letters of any script, no digits, punctuation or byte pieces)
  and at least 2 characters long, and which is not a special or added token (BOS/EOS, chat
  markers, image placeholders). Ids past the tokenizer's length (padded embedding rows) are not
  readable. Early blocks' lens distributions are dominated by fragments and symbols; the share of
  readable words among the top-k tokens rises as the state comes to mean something a word can say.
* **refusal tokens**: for each word of :data:`REFUSAL_WORDS`, spelled as written and with a
  leading space (BPE vocabularies spell both), the *first* sub-token, kept only when it ends at a
  word boundary: the whole word ("Ġsorry"), or a piece followed by a non-letter ("I" of "I'm",
  "can" of "can't"), never a mid-word fragment ("un" of "unable", "Sor" of " Sorry") that would
  count every word starting with those letters. Deduplicated. "I" and "can" are also common in
  answers, which is why the harmful-minus-benign gap, not the raw probability, locates refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sasa.models.adapters import Adapter
from sasa.models.compat import execution_device

logger = logging.getLogger(__name__)

REFUSAL_WORDS: tuple[str, ...] = (
    "sorry", "Sorry", "cannot", "Cannot", "apologize", "Apologies", "unable", "Unable", "can't", "I'm",
    "Unfortunately", "unfortunately", "refuse", "illegal", "unethical",
)


def readable_token_mask(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """Boolean ``[vocab_size]``: which token ids decode to a readable word piece (module doc)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    n = min(vocab_size, len(tokenizer))
    mask = np.zeros(vocab_size, dtype=bool)
    for i in range(n):
        if i in special:
            continue
        text = tokenizer.decode([i]).strip()
        mask[i] = len(text) >= 2 and text.isalpha()
    return mask


def refusal_token_ids(tokenizer: Any, words: Sequence[str] = REFUSAL_WORDS, vocab_size: int | None = None) -> list[int]:
    """First sub-token of each word, bare and space-prefixed, where it ends at a word boundary (module doc)."""
    ids: set[int] = set()
    for w in words:
        for form in (w, " " + w):
            toks = tokenizer.encode(form, add_special_tokens=False)
            if not toks:
                continue
            piece = tokenizer.decode([toks[0]]).strip()
            word = form.strip()
            if piece and word.startswith(piece) and (len(piece) == len(word) or not word[len(piece)].isalpha()):
                ids.add(int(toks[0]))
    out = sorted(i for i in ids if vocab_size is None or i < vocab_size)
    if not out:
        raise ValueError(f"none of the refusal words {list(words)} map to tokens of this tokenizer")
    return out


@dataclass
class LensReadout:
    """Per sample and block: top-k token ids, refusal-token probability and best refusal rank (1-based)."""

    top_ids: np.ndarray      # [n, L, k] int64
    refusal_prob: np.ndarray  # [n, L] float64
    refusal_rank: np.ndarray  # [n, L] int64


def lens_readout(
    adapter: Adapter,
    states: np.ndarray,
    refusal_ids: Sequence[int],
    *,
    top_k: int = 10,
    batch_size: int = 64,
    progress: bool = True,
) -> LensReadout:
    """Logit lens over ``states [n, L, d]`` in chunks of ``batch_size`` rows (the vocabulary is wide).

    Uses :meth:`Adapter.logits_from_hidden`, so final-logit soft-capping (Gemma) is applied as in
    the model's own head. No forward pass of the model runs.
    """
    n, L, d = states.shape
    head = adapter.unembedding
    dev, dtype = execution_device(head), head.weight.dtype
    ref = torch.as_tensor(list(refusal_ids), device=dev)
    flat = torch.as_tensor(states).reshape(n * L, d)
    tops, probs, ranks = [], [], []
    with torch.inference_mode():
        for lo in tqdm(range(0, n * L, batch_size), desc="logit lens", unit="chunk", disable=not progress):
            h = flat[lo:lo + batch_size].to(dev, dtype)
            logits = adapter.logits_from_hidden(h.unsqueeze(1))[:, 0].float()
            tops.append(logits.topk(top_k, dim=-1).indices.cpu())
            logp = torch.log_softmax(logits, dim=-1)
            probs.append(logp[:, ref].exp().sum(-1).double().cpu())
            best = logits[:, ref].max(-1, keepdim=True).values
            ranks.append(((logits > best).sum(-1) + 1).cpu())
    return LensReadout(torch.cat(tops).reshape(n, L, top_k).numpy().astype(np.int64),
                       torch.cat(probs).reshape(n, L).numpy(),
                       torch.cat(ranks).reshape(n, L).numpy().astype(np.int64))
