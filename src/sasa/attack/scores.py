"""Detector scores as differentiable functions of the model inputs, for an attacker who knows them.

The engine computes SASA's score in one prefill under ``inference_mode`` (no gradient).  Here the
same passes run with the gradient kept: pass 1 is the model's forward with its blocks tapped
(:class:`~sasa.engine.interception.LayerTap`), stopped after the last block the score needs (f for
SASA's probe) and without the unembedding; block s's states are replaced by their projection onto
block f's (Eq. 8) and pass 2 runs blocks s+1.. on them with pass 1's own call arguments
(:func:`~sasa.engine.prefill.augmented_pass`); the probe reads the next-token logits (or a
block's output) at the last position.  The gradient flows through both passes.  On clean inputs
each function equals the detector's own ``score``, and the gradient equals the one through the plain
definition, two full forwards (tests/test_attack.py).
"""

from __future__ import annotations

import torch

from sasa.detector.detectors import HiddenDetect, ProbeDetector
from sasa.engine.interception import LayerTap, idle_head
from sasa.engine.prefill import augmented_pass
from sasa.models import capture as hooks
from sasa.models.adapters import Adapter


def _probe_logit(probe, x: torch.Tensor) -> torch.Tensor:
    x = x.float().cpu()
    if probe.mean is not None and probe.std is not None:
        x = (x - probe.mean) / probe.std
    return (x * probe.weight).sum(-1) + probe.bias


def probe_features(adapter: Adapter, detector: ProbeDetector, inputs: dict) -> torch.Tensor:
    """The probe's input rows ([B, dim]) for ``inputs``, with the gradient kept: the engine's own
    passes (blocks 0..f, then s+1..L-1 for SASA's logits), not two full forwards."""
    engine = detector.engine
    plan = engine.plan()
    with LayerTap(adapter.layers, plan.record_from, plan.keep, plan.last_plain) as tap, \
            idle_head(adapter.unembedding, True):  # the model's own head output is never read
        adapter.model(**inputs, use_cache=False)
    result, _ = augmented_pass(adapter, tap, plan, engine.projection, engine.features, inputs["input_ids"],
                               inputs.get("attention_mask"), None, ())
    return result.features


def differentiable_score(adapter: Adapter, detector, inputs: dict) -> torch.Tensor:
    """Risk scores ([B]) of ``detector`` (a SASA or no-projection probe, or HiddenDetect) on encoded
    inputs, as a differentiable function of them (``pixel_values`` included)."""
    if isinstance(detector, ProbeDetector):
        return _probe_logit(detector.probe, probe_features(adapter, detector, inputs))
    if isinstance(detector, HiddenDetect):
        with hooks.capture(adapter, range(adapter.num_layers), last_position=True) as kept, \
                idle_head(adapter.unembedding, True):
            adapter.model(**inputs, use_cache=False)
        return detector.area(detector.similarities(kept))
    raise TypeError(f"no differentiable score for a {type(detector).__name__} detector "
                    "(supported: ProbeDetector, HiddenDetect)")
