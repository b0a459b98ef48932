"""The SASA two-pass engine, done in one prefill.

Pass 1 is the model's own prefill, run by ``generate`` itself so inputs, position ids (M-RoPE
included), masks and the KV cache are exactly what plain generation uses. While it runs, a
:class:`_LayerTap` records each decoder block's call arguments and stops computing after the last
block that is needed (the fused layer f when only a risk score is wanted). Pass 2 starts from the
projected state of block s and re-runs blocks s+1..L-1 with the recorded arguments: the vision
tower, the embeddings and blocks 0..s are never run twice. If the prompt is answered, the skipped
blocks f+1..L-1 of pass 1 are run then, completing the vanilla KV cache, and ``generate`` decodes
from it with no third prefill.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from sasa.layers import LayerSelection
from sasa.models import compat
from sasa.models.adapters import Adapter
from sasa.projection import ProjectionConfig, apply_projection, position_mask

logger = logging.getLogger(__name__)

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


@dataclass
class PrefillResult:
    """What one guarded prefill produced, all on CPU in float32, one row per prompt."""

    features: torch.Tensor
    logits_projected: torch.Tensor | None = None
    logits_vanilla: torch.Tensor | None = None
    captured: dict[int, torch.Tensor] = field(default_factory=dict)
    prompt_lengths: list[int] = field(default_factory=list)


@dataclass
class GenerationResult:
    """Per prompt: generated token ids (empty when refused before generation) and text."""

    token_ids: list[list[int]]
    texts: list[str]
    refused: list[bool]
    prefill: PrefillResult | None
    sequences: torch.Tensor | None = None


class _Abort(Exception):
    """Raised inside generate's prefill to stop without decoding; carries the prefill result."""

    def __init__(self, result: PrefillResult) -> None:
        super().__init__("prefill finished; no decoding requested")
        self.result = result


class _Handoff(Exception):
    """Raised inside generate's prefill when sasa's own projected decoder takes over."""

    def __init__(self, augmented_cache: Any, logits: torch.Tensor, outputs: Any, model_kwargs: dict) -> None:
        super().__init__("prefill finished; decoding continues with projection at every step")
        self.augmented_cache = augmented_cache
        self.logits = logits
        self.outputs = outputs
        self.model_kwargs = model_kwargs


class _RowsDone(StoppingCriteria):
    """Marks refused rows as finished right after their first token."""

    def __init__(self) -> None:
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.done is None:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.done.to(input_ids.device)


class _LayerTap:
    """Wraps decoder-block forwards for one prefill.

    Records (args, kwargs) of blocks >= ``record_from``, keeps the outputs of ``keep`` blocks and
    returns its input unchanged from every block after ``last`` (which is then not computed).
    """

    def __init__(self, layers: nn.ModuleList, record_from: int, keep: set[int], last: int) -> None:
        self.layers = layers
        self.record_from = record_from
        self.keep = keep
        self.last = last
        self.calls: dict[int, tuple[tuple, dict, bool]] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.returns_tuple = False
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> "_LayerTap":
        for j, layer in enumerate(self.layers):
            self._restore.append(_override_forward(layer, self._wrap(j, layer.forward)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for restore in self._restore:
            restore()
        self._restore = []

    def _wrap(self, j: int, original: Callable) -> Callable:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if args:
                hidden, rest, positional = args[0], args[1:], True
            else:
                hidden, rest, positional = kwargs.pop("hidden_states"), (), False
            if j >= self.record_from:
                self.calls[j] = (rest, dict(kwargs), positional)
            if j > self.last:
                return (hidden,) if self.returns_tuple else hidden
            out = original(hidden, *rest, **kwargs) if positional else original(hidden_states=hidden, **kwargs)
            self.returns_tuple = isinstance(out, tuple)
            if j in self.keep:
                self.outputs[j] = out[0] if self.returns_tuple else out
            return out

        return forward


def _override_forward(module: nn.Module, forward: Callable) -> Callable[[], None]:
    """Shadow ``module.forward`` on the instance (hooks still run); return the undo."""
    saved = module.__dict__.get("forward")
    module.forward = forward

    def restore() -> None:
        if saved is None:
            del module.forward
        else:
            module.forward = saved

    return restore


@contextmanager
def _idle_head(head: nn.Module, active: bool) -> Iterator[None]:
    """While pass 1 skips its last blocks, its logits are never used: skip the unembedding matmul too."""
    if not active:
        yield
        return
    vocab = head.weight.shape[0]
    restore = _override_forward(head, lambda x, *a, **k: x.new_zeros(*x.shape[:-1], vocab))
    try:
        yield
    finally:
        restore()


class SASAEngine:
    """Runs SASA's augmented pass (and the plain one) over a batch, optionally then decoding."""

    def __init__(
        self,
        adapter: Adapter,
        layers: LayerSelection,
        projection: ProjectionConfig | None = None,
        features: FeatureSpec | None = None,
    ) -> None:
        compat.check_transformers()
        self.adapter = adapter
        self.model = adapter.model
        self.selection = layers
        self.s, self.f = layers.resolve(adapter.num_layers)
        self.projection = projection or ProjectionConfig()
        self.features = features or FeatureSpec()
        L = adapter.num_layers
        if self.features.kind == "hidden" and not 0 <= self.features.layer < L:
            raise ValueError(f"feature layer {self.features.layer} out of range 0..{L - 1}")

    # --- public API -----------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str], images: Sequence[Any] | None = None, **kw: Any) -> dict:
        """Build model inputs (chat template, image placeholders, left padding) via the adapter."""
        return self.adapter.encode(prompts, images, **kw)

    def prefill(self, inputs: dict, capture_layers: Sequence[int] = (), vanilla_logits: bool = False) -> PrefillResult:
        """Score-only run: pass 1 up to what is needed, pass 2, no decoding."""

        def abort(result: PrefillResult) -> torch.Tensor:
            raise _Abort(result)

        try:
            self._generate(inputs, decide=abort, augment=False, capture_layers=capture_layers,
                           need_vanilla_logits=vanilla_logits, max_new_tokens=1)
        except _Abort as stop:
            return stop.result
        raise RuntimeError("prefill did not run: the model's generate never called its prefill")

    def generate(
        self,
        inputs: dict,
        decide: Callable[[PrefillResult], torch.Tensor] | None = None,
        augment: bool = False,
        capture_layers: Sequence[int] = (),
        project_decoding: bool = False,
        **generate_kwargs: Any,
    ) -> GenerationResult:
        """Prefill with SASA, ask ``decide`` which rows to refuse, then decode the others.

        augment=False: answered rows decode from the vanilla cache, giving exactly plain ``generate``'s
        tokens. augment=True: they decode from the projected prefill (Eq. 8 acts on prompt positions;
        the generated tokens run through the model unmodified). augment=True with
        ``project_decoding=True``: every generated token is projected too (its block-s state onto its
        own block-f state), by sasa's greedy decoder, which keeps a plain cache for blocks 0..f and
        an augmented one for blocks s+1..L-1; only ``max_new_tokens`` is honoured then.
        """
        if project_decoding and not augment:
            raise ValueError("project_decoding needs augment=True")
        try:
            seqs, result, refused = self._generate(inputs, decide=decide, augment=augment,
                                                   capture_layers=capture_layers,
                                                   project_decoding=project_decoding, **generate_kwargs)
        except _Abort as stop:
            n = stop.result.features.shape[0]
            return GenerationResult([[] for _ in range(n)], ["" for _ in range(n)], [True] * n, stop.result)
        prompt_len = inputs["input_ids"].shape[1]
        new = seqs[:, prompt_len:].cpu()
        tok = self.adapter.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        ids, texts = [], []
        for row, r in zip(new.tolist(), refused):
            if r:
                ids.append([])
                texts.append("")
                continue
            while row and pad is not None and row[-1] == pad:
                row = row[:-1]
            ids.append(row)
            texts.append(tok.decode(row, skip_special_tokens=True))
        return GenerationResult(ids, texts, refused, result, seqs)

    # --- internals ------------------------------------------------------------------------------
    def _plan(self, capture_layers: Sequence[int], need_vanilla_logits: bool, augment: bool) -> tuple[int, int | None]:
        """Last block of pass 1 and of pass 2 (None: no pass 2) for the requested outputs."""
        L, s, f = self.adapter.num_layers, self.s, self.f
        feat = self.features
        last1 = f
        for k in capture_layers:
            if not 0 <= k < L:
                raise ValueError(f"capture layer {k} out of range 0..{L - 1}")
            last1 = max(last1, k)
        if feat.kind == "hidden" and (not feat.projected or feat.layer <= s):
            last1 = max(last1, feat.layer)
        if need_vanilla_logits or (feat.kind == "logits" and not feat.projected):
            last1 = L - 1
        last2: int | None = None
        if augment or (feat.kind == "logits" and feat.projected):
            last2 = L - 1
        elif feat.kind == "hidden" and feat.projected and feat.layer > s:
            last2 = feat.layer
        return last1, last2

    def _generate(
        self,
        inputs: dict,
        decide: Callable[[PrefillResult], torch.Tensor] | None,
        augment: bool,
        capture_layers: Sequence[int] = (),
        need_vanilla_logits: bool = False,
        project_decoding: bool = False,
        **generate_kwargs: Any,
    ) -> tuple[torch.Tensor, PrefillResult, list[bool]]:
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise ValueError("inputs need input_ids and attention_mask (build them with SASAEngine.encode)")
        mask = inputs["attention_mask"]
        if mask.shape[0] > 1 and not bool(mask[:, -1].all()):
            raise ValueError("batched inputs must be left padded (the last position must be a real token)")
        last1, last2 = self._plan(capture_layers, need_vanilla_logits, augment)
        stopper = _RowsDone()
        state: dict[str, Any] = {}
        model = self.model

        def on_prefill(original: Callable, input_ids: torch.Tensor, generation_config: Any, model_kwargs: dict,
                       *args: Any, **kwargs: Any) -> Any:
            if state.get("done"):
                return original(input_ids, generation_config, model_kwargs, *args, **kwargs)
            state["done"] = True
            cache = compat.find_cache(model_kwargs)
            empty_cache = copy.deepcopy(cache) if (augment and cache is not None) else None
            keep = {self.s, self.f, last1, *capture_layers}
            if self.features.kind == "hidden":
                keep.add(self.features.layer)
            skipping = last1 < self.adapter.num_layers - 1
            with _LayerTap(self.adapter.layers, self.s + 1, keep, last1) as tap, _idle_head(
                    self.adapter.unembedding, skipping):
                out = original(input_ids, generation_config, model_kwargs, *args, **kwargs)
            result, h2_last = self._after_pass1(tap, input_ids, model_kwargs, last1, last2, empty_cache, capture_layers)
            refuse = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            if decide is not None:
                refuse = torch.as_tensor(decide(result), dtype=torch.bool).reshape(-1).cpu()
                if refuse.shape[0] != input_ids.shape[0]:
                    raise ValueError("decide() must return one boolean per prompt")
            state["refused"] = refuse.tolist()
            state["result"] = result
            if bool(refuse.all()):
                raise _Abort(result)
            stopper.done = refuse
            if project_decoding:
                raise _Handoff(empty_cache, h2_last, out, model_kwargs)
            if augment:
                if cache is not None:
                    compat.copy_cache_layers(cache, empty_cache, range(self.s + 1, self.adapter.num_layers))
                out.logits = h2_last
            else:
                out.logits = self._finish_vanilla(tap, last1, cache)
                if result.logits_vanilla is None:
                    result.logits_vanilla = out.logits[:, -1].float().cpu()
            return out

        gen_kwargs = dict(generate_kwargs)
        gen_kwargs.setdefault("do_sample", False)
        criteria = StoppingCriteriaList(gen_kwargs.pop("stopping_criteria", []) or [])
        criteria.append(stopper)
        try:
            with compat.intercept_prefill(model, on_prefill), torch.inference_mode():
                seqs = model.generate(**inputs, stopping_criteria=criteria, **gen_kwargs)
        except _Handoff as handoff:
            seqs = self._decode_projected(inputs, handoff, torch.tensor(state["refused"]),
                                          int(generate_kwargs.get("max_new_tokens", 20)))
        if "result" not in state:
            raise RuntimeError("the model's generate did not call its prefill; cannot apply SASA")
        if not torch.is_tensor(seqs):
            seqs = seqs.sequences
        return seqs, state["result"], state["refused"]

    @torch.inference_mode()
    def _decode_projected(self, inputs: dict, handoff: _Handoff, refused: torch.Tensor,
                          max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with Eq. 8 at every generated position (see :meth:`generate`).

        Each step prepares its inputs and updates its state with the model's own generation hooks
        (``prepare_inputs_for_generation`` / ``_update_model_kwargs_for_generation``), as ``generate``
        does, runs blocks 0..f on the plain cache and s+1..L-1 on the augmented one.
        """
        model, L, s, f = self.model, self.adapter.num_layers, self.s, self.f
        if compat.find_cache(handoff.model_kwargs) is None or handoff.augmented_cache is None:
            raise RuntimeError("projected decoding needs the model to use a KV cache")
        augmented = handoff.augmented_cache
        plain = compat.find_cache(handoff.model_kwargs)
        # The plain pass never runs blocks past f, but masks are sized from the cache's layers
        # (a model's full-attention mask may read a block past f): let them see the augmented ones.
        compat.copy_cache_layers(plain, augmented, range(f + 1, L))
        eos = model.generation_config.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        pad = model.generation_config.pad_token_id
        pad = pad if pad is not None else getattr(self.adapter.tokenizer, "pad_token_id", None) or 0
        model_kwargs = compat.next_step_kwargs(model, handoff.outputs, dict(handoff.model_kwargs))
        seqs = inputs["input_ids"]
        done = refused.to(seqs.device).clone()
        logits = handoff.logits[:, -1]
        for step in range(max_new_tokens):
            nxt = torch.where(done, torch.full_like(seqs[:, 0], pad), logits.argmax(-1))
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            done = done | torch.isin(nxt, eos_ids.to(nxt.device))
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            step_inputs = compat.step_inputs(model, seqs, model_kwargs)
            with _LayerTap(self.adapter.layers, s + 1, {s, f}, f) as tap, _idle_head(self.adapter.unembedding, True):
                outputs = model(**step_inputs, return_dict=True)
            model_kwargs = compat.next_step_kwargs(model, outputs, model_kwargs)
            ones = torch.ones_like(nxt[:, None])
            mask = position_mask(self.projection, ones, self.adapter.image_mask(nxt[:, None]))
            h = apply_projection(tap.outputs[s], tap.outputs[f], self.projection, mask)
            for j in range(s + 1, L):
                h = self._run_block(tap, j, h, augmented)
            logits = self.adapter.logits_from_hidden(h)[:, -1]
        return seqs

    def _run_block(self, tap: _LayerTap, j: int, hidden: torch.Tensor, cache: Any) -> torch.Tensor:
        rest, kwargs, positional = tap.calls[j]
        kwargs = dict(kwargs)
        for key in compat.CACHE_KWARGS:
            if key in kwargs:
                kwargs[key] = cache
        if cache is None and "use_cache" in kwargs:
            kwargs["use_cache"] = False
        layer = self.adapter.layers[j]
        out = layer(hidden, *rest, **kwargs) if positional else layer(hidden_states=hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def _after_pass1(self, tap: _LayerTap, input_ids: torch.Tensor, model_kwargs: dict, last1: int,
                     last2: int | None, cache2: Any, capture_layers: Sequence[int]) -> tuple[PrefillResult, Any]:
        s, f, feat = self.s, self.f, self.features
        attn = model_kwargs.get("attention_mask")
        if attn is None:
            attn = torch.ones_like(input_ids)
        h_s, h_f = tap.outputs[s], tap.outputs[f]
        last_logits_proj = None
        feature = None
        h2_last = None
        if last2 is not None or (feat.kind == "hidden" and feat.projected and feat.layer == s):
            pos = position_mask(self.projection, attn, self.adapter.image_mask(input_ids))
            h = apply_projection(h_s, h_f, self.projection, pos)
            if feat.kind == "hidden" and feat.projected and feat.layer == s:
                feature = h[:, -1]
            for j in range(s + 1, (last2 if last2 is not None else s) + 1):
                h = self._run_block(tap, j, h, cache2)
                if feat.kind == "hidden" and feat.projected and feat.layer == j:
                    feature = h[:, -1]
            if last2 == self.adapter.num_layers - 1:
                h2_last = self.adapter.logits_from_hidden(h)
                last_logits_proj = h2_last[:, -1].float().cpu()
        logits_vanilla = None
        if last1 == self.adapter.num_layers - 1:
            logits_vanilla = self.adapter.logits_from_hidden(tap.outputs[last1])[:, -1].float().cpu()
        if feat.kind == "logits":
            feature = last_logits_proj if feat.projected else logits_vanilla
        elif feature is None:
            feature = tap.outputs[feat.layer][:, -1]
        captured = {k: tap.outputs[k][:, -1].float().cpu() for k in capture_layers}
        lengths = attn.sum(-1).tolist()
        result = PrefillResult(feature.float().cpu(), last_logits_proj, logits_vanilla, captured, lengths)
        return result, h2_last

    def _finish_vanilla(self, tap: _LayerTap, last1: int, cache: Any) -> torch.Tensor:
        """Run the blocks pass 1 skipped, filling the vanilla cache; return last-position logits [B,1,V]."""
        h = tap.outputs[last1]
        for j in range(last1 + 1, self.adapter.num_layers):
            h = self._run_block(tap, j, h, cache)
        return self.adapter.logits_from_hidden(h)


def plain_engine(adapter: Adapter) -> SASAEngine:
    """An engine that runs only the plain forward (features: the last block, not projected), for
    reading states with ``prefill(capture_layers=...)``: analysis, HiddenDetect, head ablation.

    The layer selection is a placeholder: with these features no projected pass is planned."""
    L = adapter.num_layers
    if L < 2:
        raise ValueError(f"layer analysis needs a model with at least 2 decoder blocks, this one has {L}")
    return SASAEngine(adapter, LayerSelection(0, 1), features=FeatureSpec("hidden", projected=False, layer=L - 1))
