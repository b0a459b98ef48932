"""Detectors: a risk score per prompt before generation, and the threshold that turns it into a refusal.

``ProbeDetector`` is SASA's (a linear probe on augmented-pass features) and, with a probe fitted on
plain-forward features, the no-projection baseline. ``HiddenDetect`` is the training-free baseline of
Jiang et al. 2025 (arXiv 2502.14744): read each layer's last-token state through the model's own
final norm and unembedding (logit lens), take its cosine similarity to a refusal-token indicator
vector, and integrate (trapezoid) over the safety-aware layers, which are chosen few-shot as the
layers where a few harmful prompts exceed a few benign ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from sasa.data.sample import Sample
from sasa.engine import FeatureSpec, SASAEngine
from sasa.features import batches, encode_samples
from sasa.layers import LayerSelection
from sasa.models.adapters import Adapter
from sasa.probe import LinearProbe, threshold_at_fpr

logger = logging.getLogger(__name__)

# The refusal-token words of the HiddenDetect release (its predefined list), tokenised per model.
HIDDENDETECT_REFUSAL_WORDS = (
    "Sorry", "sorry", "unfortunately", "unfortunate", "sadly", "explicit", "deadly", "crim", "criminal",
    "illegal", "dangerous", "harmful", "warning", "alarm", "caution", "shame", "conspiracy", "Subject",
    "contrary", "shouldn",
)


class Detector(Protocol):
    name: str
    threshold: float

    def score(self, samples: Sequence[Sample]) -> np.ndarray: ...


@dataclass
class ProbeDetector:
    """A fitted probe and the engine configured as it was trained."""

    engine: SASAEngine
    probe: LinearProbe
    name: str = "sasa"

    @property
    def threshold(self) -> float:
        return self.probe.threshold

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        result = self.engine.prefill(encode_samples(self.engine, samples))
        return self.probe.decision_function(result.features)

    def digest(self) -> str:
        """Changes whenever the scores or the decisions could: probe tensors, threshold, engine set-up."""
        e = self.engine
        tensors = [self.probe.weight, torch.tensor([self.probe.bias])] + \
            [t for t in (self.probe.mean, self.probe.std) if t is not None]
        return _digest(self.name, self.probe.threshold, (e.s, e.f), e.projection, e.features, *tensors)


@dataclass
class HiddenDetect:
    """Training-free refusal-similarity detector; call :meth:`calibrate` with a few labelled prompts."""

    adapter: Adapter
    refusal_words: Sequence[str] = HIDDENDETECT_REFUSAL_WORDS
    layers: tuple[int, int] | None = None
    threshold: float = 0.0
    name: str = "hiddendetect"
    _engine: SASAEngine = field(init=False, repr=False)
    _refusal: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        L = self.adapter.num_layers
        # The engine's (s, f) are unused: plain-forward features, so no projected pass runs.
        self._engine = SASAEngine(self.adapter, LayerSelection(0, 1),
                                  features=FeatureSpec("hidden", projected=False, layer=L - 1))
        tok = self.adapter.tokenizer
        ids = sorted({i for w in self.refusal_words for i in tok.encode(w, add_special_tokens=False)})
        vocab = self.adapter.unembedding.weight.shape[0]
        ids = [i for i in ids if i < vocab]
        if not ids:
            raise ValueError("none of the refusal words map to tokens of this model")
        self._refusal = torch.zeros(vocab)
        self._refusal[ids] = 1.0

    def layer_similarities(self, samples: Sequence[Sample]) -> np.ndarray:
        """[n, L] cosine similarity of each layer's logit-lens distribution with the refusal vector."""
        L = self.adapter.num_layers
        result = self._engine.prefill(encode_samples(self._engine, samples), capture_layers=range(L))
        norm, head = self.adapter.final_norm, self.adapter.unembedding
        sims = []
        with torch.inference_mode():
            for k in range(L):
                h = result.captured[k].to(head.weight.device, head.weight.dtype)
                logits = head(norm(h)).float().cpu()
                sims.append(torch.nn.functional.cosine_similarity(logits, self._refusal.unsqueeze(0), dim=-1))
        return torch.stack(sims, dim=1).numpy()

    def calibrate(self, samples: Sequence[Sample], target_fpr: float = 0.05, batch_size: int = 8) -> dict:
        """Few-shot: choose the safety-aware layer range, then the threshold on the benign ones."""
        sims = np.concatenate([self.layer_similarities(b) for b in batches(list(samples), batch_size)])
        y = np.array([s.label == "harmful" for s in samples])
        if y.all() or not y.any():
            raise ValueError("HiddenDetect calibration needs harmful and benign examples")
        gap = sims[y].mean(0) - sims[~y].mean(0)
        self.layers = _longest_positive_run(gap)
        scores = self._area(sims)
        self.threshold = threshold_at_fpr(scores[~y], target_fpr)
        return {"layers": list(self.layers), "discrepancy": gap.tolist(), "threshold": self.threshold}

    def _area(self, sims: np.ndarray) -> np.ndarray:
        lo, hi = self.layers if self.layers is not None else (0, sims.shape[1] - 1)
        part = sims[:, lo:hi + 1]
        if part.shape[1] == 1:
            return part[:, 0]
        return ((part[:, 1:] + part[:, :-1]) / 2).sum(1)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return self._area(self.layer_similarities(samples))

    def digest(self) -> str:
        return _digest(self.name, self.threshold, self.layers, tuple(self.refusal_words))


def detector_digest(det: Detector) -> str:
    """A detector's own :meth:`digest` where it has one, else its name, type and threshold."""
    own = getattr(det, "digest", None)
    return own() if callable(own) else _digest(det.name, type(det).__name__, det.threshold)


def _digest(*parts) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def _longest_positive_run(gap: np.ndarray) -> tuple[int, int]:
    """The longest run of consecutive layers where harmful > benign; the argmax layer if none."""
    best, start = (int(np.argmax(gap)),) * 2, None
    best_len = 0
    for i, g in enumerate(list(gap) + [-1.0]):
        if g > 0 and start is None:
            start = i
        elif g <= 0 and start is not None:
            if i - start > best_len:
                best, best_len = (start, i - 1), i - start
            start = None
    return best
