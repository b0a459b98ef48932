"""Guarded generation: SASA's detector decides before generation; answered prompts decode as usual.

Modes (each a :class:`sasa.guard.modes.GuardMode`, which does the work):
  vanilla         plain ``generate``; no SASA.
  detect          risk score from the augmented pass; flagged prompts get the refusal message and no
                  generation; the others decode from pass 1's KV cache (identical to ``vanilla``).
  augment         no detector; every prompt decodes from the projected (augmented) prefill.
  augment+detect  detector as in ``detect``; answered prompts decode from the augmented prefill.

With ``project_decoding=True`` the augment modes also project every generated token (greedy).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.engine.samples import encode_samples, run_into
from sasa.engine.layers import default_layers
from sasa.models.adapters import Adapter
from sasa.guard.modes import GUARD_MODES, MODES, REFUSAL, GuardedOutput
from sasa.detector.probe import LinearProbe, engine_from_probe
from sasa.store.records import Record, drop_errors, read_records

logger = logging.getLogger(__name__)

DEFAULT_REFUSAL = REFUSAL
__all__ = ["DEFAULT_REFUSAL", "Guard", "GuardedOutput", "engine_from_probe"]


class Guard:
    """Wraps a model (through its adapter) with a SASA mode and, for detecting modes, a probe."""

    def __init__(
        self,
        adapter: Adapter,
        mode: str = "detect",
        probe: LinearProbe | None = None,
        engine: SASAEngine | None = None,
        refusal_message: str = DEFAULT_REFUSAL,
        check_model: bool = True,
        project_decoding: bool = False,
    ) -> None:
        if mode not in GUARD_MODES:
            raise ValueError(f"guard mode must be one of {GUARD_MODES}, got {mode!r}")
        if project_decoding and not MODES[mode].augments:
            raise ValueError("project_decoding applies to the augment modes only")
        if MODES[mode].detects and probe is None:
            raise ValueError(f"mode {mode!r} needs a probe (fit one with `sasa probe fit`)")
        if probe is not None and check_model:
            probe.check_model(adapter.fingerprint())
        if engine is None:
            engine = engine_from_probe(adapter, probe) if probe is not None else SASAEngine(
                adapter, default_layers(adapter.num_layers))
        self.adapter = adapter
        self.mode = mode
        self.probe = probe
        self.engine = engine
        self.refusal_message = refusal_message
        self.project_decoding = project_decoding

    @classmethod
    def from_pretrained(cls, model: Any, probe: str | os.PathLike | LinearProbe, mode: str = "detect",
                        **load_kwargs: Any) -> Guard:
        """A guard from a model (a name or path for :func:`sasa.load_model`, a ``LoadedModel`` or an
        adapter) and a fitted probe (its path or the probe); the engine comes from the probe."""
        from sasa.models.loading import LoadedModel, load_model

        if isinstance(model, (str, os.PathLike)):
            model = load_model(str(model), **load_kwargs)
        adapter = model.adapter if isinstance(model, LoadedModel) else model
        if not isinstance(probe, LinearProbe):
            probe = LinearProbe.from_pretrained(probe, expect_fingerprint=adapter.fingerprint())
        return cls(adapter, mode, probe)

    def score(self, prompts: Sequence[str], images: Sequence[Any] | None = None) -> np.ndarray:
        """Risk logits for a batch, before any generation."""
        if self.probe is None:
            raise ValueError("scoring needs a probe")
        result = self.engine.prefill(self.engine.encode(prompts, images))
        return self.probe.decision_function(result.features)

    def generate_inputs(self, inputs: dict, max_new_tokens: int = 64,
                        on_decision: Callable[[list[float | None], list[bool]], None] | None = None,
                        **generate_kwargs: Any) -> list[GuardedOutput]:
        """Guarded generation of encoded inputs. ``on_decision(scores, refused)`` is called once the
        guard has decided, before the first token is decoded (a server streams refusals at once)."""
        return MODES[self.mode].generate(self, inputs, max_new_tokens, on_decision, **generate_kwargs)

    def generate(self, prompts: Sequence[str], images: Sequence[Any] | None = None, max_new_tokens: int = 64,
                 **generate_kwargs: Any) -> list[GuardedOutput]:
        """Guarded generation for a batch of prompts (images: PIL images or None per prompt)."""
        return self.generate_inputs(self.engine.encode(prompts, images), max_new_tokens, **generate_kwargs)

    def records(self, samples: Sequence[Sample], max_new_tokens: int = 64, **generate_kwargs: Any) -> list[Record]:
        """Guarded generation for samples, as records (``refused`` is left to a judge)."""
        outputs = self.generate_inputs(encode_samples(self.engine, samples), max_new_tokens, **generate_kwargs)
        return [Record.from_sample(s, self.mode, "refuse" if o.refused else "answer", response=o.text, score=o.score,
                                   latency_s=o.latency_s, n_new_tokens=o.n_new_tokens, prompt=s.prompt)
                for s, o in zip(samples, outputs)]

    def run(self, samples: Sequence[Sample], out_path: str | os.PathLike, batch_size: int = 4,
            max_new_tokens: int = 64, progress: bool = True, on_error: str = "raise", retry_errors: bool = False,
            **generate_kwargs: Any) -> Path:
        """Stream one :class:`~sasa.store.records.Record` per sample to ``out_path``; a rerun skips samples
        already written.  ``on_error="skip"`` records a bad sample as an ``error`` and goes on;
        ``retry_errors`` first drops the ``error`` records, so those samples are run again."""
        out_path = Path(out_path)
        if retry_errors:
            dropped = drop_errors(out_path)
            if dropped:
                logger.info("%s: retrying %d samples recorded as errors", out_path, dropped)
        done = {r["id"] for r in read_records(out_path)}
        todo = [s for s in samples if s.id not in done]
        if done:
            logger.info("%s: %d samples already done, %d to go", out_path, len(done), len(todo))
        for _ in run_into(out_path, todo, batch_size, lambda part: self.records(part, max_new_tokens, **generate_kwargs),
                          self.mode, on_error, progress, desc=f"generate[{self.mode}]"):
            pass
        return out_path
