"""Detector scores as differentiable functions of the model inputs, for an attacker who knows them.

The engine computes SASA's score in one prefill under ``inference_mode`` (no gradient).  Here the
same score is the paper's plain definition, with the gradient kept: pass 1 is the model's full
forward with blocks s and f recorded; block s's states are replaced by their projection onto
block f's (Eq. 8) and pass 2 runs the model again from there; the probe reads the next-token
logits (or a block's output) at the last position.  The gradient flows through both passes.  On
clean inputs each function equals the detector's own ``score`` (tests/test_attack.py).
"""

from __future__ import annotations

import torch

from sasa.detector.detectors import HiddenDetect, ProbeDetector
from sasa.models import capture as hooks
from sasa.models.adapters import Adapter
from sasa.engine.projection import apply_projection, position_mask


def _probe_logit(probe, x: torch.Tensor) -> torch.Tensor:
    x = x.float().cpu()
    if probe.mean is not None and probe.std is not None:
        x = (x - probe.mean) / probe.std
    return (x * probe.weight).sum(-1) + probe.bias


def probe_features(adapter: Adapter, detector: ProbeDetector, inputs: dict) -> torch.Tensor:
    """The probe's input rows ([B, dim]) for ``inputs``, with the gradient kept."""
    engine = detector.engine
    spec, model = engine.features, adapter.model
    layer = [spec.layer] if spec.kind == "hidden" else []
    if not spec.projected:
        with hooks.capture(adapter, layer, last_position=True) as kept:
            out = model(**inputs)
    else:
        s, f = engine.s, engine.f
        with hooks.capture(adapter, [s, f]) as plain:
            model(**inputs)
        where = position_mask(engine.projection, inputs["attention_mask"], adapter.image_mask(inputs["input_ids"]))
        new_s = apply_projection(plain[s], plain[f], engine.projection, where)
        with hooks.replace_output(adapter.layers[s], lambda h: new_s), \
                hooks.capture(adapter, layer, last_position=True) as kept:
            out = model(**inputs)
    return kept[spec.layer] if spec.kind == "hidden" else out.logits[:, -1].float()


def differentiable_score(adapter: Adapter, detector, inputs: dict) -> torch.Tensor:
    """Risk scores ([B]) of ``detector`` (a SASA or no-projection probe, or HiddenDetect) on encoded
    inputs, as a differentiable function of them (``pixel_values`` included)."""
    if isinstance(detector, ProbeDetector):
        return _probe_logit(detector.probe, probe_features(adapter, detector, inputs))
    if isinstance(detector, HiddenDetect):
        with hooks.capture(adapter, range(adapter.num_layers), last_position=True) as kept:
            adapter.model(**inputs)
        return detector.area(detector.similarities(kept))
    raise TypeError(f"no differentiable score for a {type(detector).__name__} detector "
                    "(supported: ProbeDetector, HiddenDetect)")
