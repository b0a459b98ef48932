"""The engine: one call into the model's own ``generate``, with SASA inside its prefill."""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from transformers import StoppingCriteriaList

from sasa.engine.decoding import GenerationResult, RowsDone, decode_projected, generated_rows
from sasa.engine.interception import Handoff, LayerTap, PrefillDone, idle_head
from sasa.engine.plan import FeatureSpec, PassPlan, plan_passes
from sasa.engine.prefill import PrefillResult, augmented_pass, finish_plain
from sasa.engine.layers import LayerSelection
from sasa.models import compat
from sasa.models.adapters import Adapter
from sasa.engine.projection import ProjectionConfig


def _check_batch(inputs: dict) -> None:
    """Inputs the engine can run: ids and mask present, a batch left padded."""
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise ValueError("inputs need input_ids and attention_mask (build them with SASAEngine.encode)")
    mask = inputs["attention_mask"]
    if mask.shape[0] > 1 and not bool(mask[:, -1].all()):
        raise ValueError("batched inputs must be left padded (the last position must be a real token)")


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

    def encode(self, prompts: Sequence[str], images: Sequence[Any] | None = None, **kw: Any) -> dict:
        """Build model inputs (chat template, image placeholders, left padding) via the adapter."""
        return self.adapter.encode(prompts, images, **kw)

    def plan(self, capture_layers: Sequence[int] = (), need_plain_logits: bool = False,
             augment: bool = False) -> PassPlan:
        return plan_passes(self.adapter.num_layers, self.s, self.f, self.features, capture_layers,
                           need_plain_logits, augment)

    def prefill(self, inputs: dict, capture_layers: Sequence[int] = (), vanilla_logits: bool = False) -> PrefillResult:
        """Score-only run: pass 1 up to what is needed, pass 2, no decoding."""

        def stop(result: PrefillResult) -> torch.Tensor:
            raise PrefillDone(result)

        try:
            self._generate(inputs, decide=stop, augment=False, capture_layers=capture_layers,
                           need_plain_logits=vanilla_logits, max_new_tokens=1)
        except PrefillDone as done:
            return done.result
        raise RuntimeError("prefill did not run: the model's generate never called its prefill")

    def prefill_pairs(self, inputs: dict, pairs: Sequence[tuple[int, int]]) -> tuple[dict[tuple[int, int], torch.Tensor],
                                                                                    torch.Tensor]:
        """The features of every (s, f) pair in ``pairs`` from one pass 1, and the plain logits.

        Pass 1 runs the whole model once, keeping every block output a pair needs; each pair's pass 2
        then runs on those outputs exactly as :meth:`prefill` would (same projection and features):
        a map over many pairs costs one plain forward plus one pass 2 per pair."""
        L = self.adapter.num_layers
        plans = {}
        for s, f in dict.fromkeys(pairs):
            if not 0 <= s < f < L:
                raise ValueError(f"layer pair ({s}, {f}) out of range: need 0 <= s < f < {L}")
            plans[(s, f)] = plan_passes(L, s, f, self.features, (), need_plain_logits=True)
        if not plans:
            raise ValueError("no layer pair given")
        keep = frozenset().union(*(p.keep for p in plans.values()))
        record_from = min(p.record_from for p in plans.values())
        _check_batch(inputs)

        def on_prefill(original: Callable, input_ids: torch.Tensor, generation_config: Any, model_kwargs: dict,
                       *args: Any, **kwargs: Any) -> Any:
            with LayerTap(self.adapter.layers, record_from, keep, L - 1) as tap:
                original(input_ids, generation_config, model_kwargs, *args, **kwargs)
            attention = model_kwargs.get("attention_mask")
            features, plain = {}, None
            for pair, plan in plans.items():
                result, _ = augmented_pass(self.adapter, tap, plan, self.projection, self.features, input_ids,
                                           attention, None, ())
                features[pair], plain = result.features, result.logits_vanilla
            raise PrefillDone((features, plain))

        try:
            with compat.intercept_prefill(self.model, on_prefill), torch.inference_mode():
                self.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        except PrefillDone as done:
            return done.result
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
        except PrefillDone as done:
            n = done.result.features.shape[0]
            return GenerationResult([[] for _ in range(n)], ["" for _ in range(n)], [True] * n, done.result)
        ids, texts = generated_rows(self.adapter.tokenizer, seqs, inputs["input_ids"].shape[1], refused)
        return GenerationResult(ids, texts, refused, result, seqs)

    def _generate(
        self,
        inputs: dict,
        decide: Callable[[PrefillResult], torch.Tensor] | None,
        augment: bool,
        capture_layers: Sequence[int] = (),
        need_plain_logits: bool = False,
        project_decoding: bool = False,
        **generate_kwargs: Any,
    ) -> tuple[torch.Tensor, PrefillResult, list[bool]]:
        _check_batch(inputs)
        plan = self.plan(capture_layers, need_plain_logits, augment)
        stopper = RowsDone()
        state: dict[str, Any] = {}

        def on_prefill(original: Callable, input_ids: torch.Tensor, generation_config: Any, model_kwargs: dict,
                       *args: Any, **kwargs: Any) -> Any:
            if state.get("started"):
                return original(input_ids, generation_config, model_kwargs, *args, **kwargs)
            state["started"] = True
            cache = compat.find_cache(model_kwargs)
            augmented_cache = copy.deepcopy(cache) if (augment and cache is not None) else None
            with LayerTap(self.adapter.layers, plan.record_from, plan.keep, plan.last_plain) as tap, idle_head(
                    self.adapter.unembedding, plan.skips_plain_tail):
                out = original(input_ids, generation_config, model_kwargs, *args, **kwargs)
            result, augmented_logits = augmented_pass(self.adapter, tap, plan, self.projection, self.features,
                                                      input_ids, model_kwargs.get("attention_mask"),
                                                      augmented_cache, capture_layers)
            refuse = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            if decide is not None:
                refuse = torch.as_tensor(decide(result), dtype=torch.bool).reshape(-1).cpu()
                if refuse.shape[0] != input_ids.shape[0]:
                    raise ValueError("decide() must return one boolean per prompt")
            state["refused"] = refuse.tolist()
            state["result"] = result
            if bool(refuse.all()):
                raise PrefillDone(result)
            stopper.done = refuse
            if project_decoding:
                raise Handoff(augmented_cache, augmented_logits, out, model_kwargs)
            if augment:
                if cache is not None:
                    compat.copy_cache_layers(cache, augmented_cache, range(plan.s + 1, plan.num_layers))
                out.logits = augmented_logits
            else:
                out.logits = finish_plain(self.adapter, tap, plan, cache)
                if result.logits_vanilla is None:
                    result.logits_vanilla = out.logits[:, -1].float().cpu()
            return out

        gen_kwargs = dict(generate_kwargs)
        gen_kwargs.setdefault("do_sample", False)
        criteria = StoppingCriteriaList(gen_kwargs.pop("stopping_criteria", []) or [])
        criteria.append(stopper)
        try:
            with compat.intercept_prefill(self.model, on_prefill), torch.inference_mode():
                seqs = self.model.generate(**inputs, stopping_criteria=criteria, **gen_kwargs)
        except Handoff as handoff:
            seqs = decode_projected(self.adapter, plan, self.projection, inputs["input_ids"], handoff,
                                    torch.tensor(state["refused"]), int(generate_kwargs.get("max_new_tokens", 20)),
                                    criteria)
        if "result" not in state:
            raise RuntimeError("the model's generate did not call its prefill; cannot apply SASA")
        if not torch.is_tensor(seqs):
            seqs = seqs.sequences
        return seqs, state["result"], state["refused"]


def plain_engine(adapter: Adapter) -> SASAEngine:
    """An engine that runs only the plain forward (features: the last block, not projected), for
    reading states with ``prefill(capture_layers=...)``: analysis, HiddenDetect, head ablation.

    The layer selection is a placeholder: with these features no projected pass is planned."""
    L = adapter.num_layers
    if L < 2:
        raise ValueError(f"layer analysis needs a model with at least 2 decoder blocks, this one has {L}")
    return SASAEngine(adapter, LayerSelection(0, 1), features=FeatureSpec("hidden", projected=False, layer=L - 1))
