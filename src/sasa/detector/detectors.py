"""Detectors: a risk score per prompt before generation, and the threshold that turns it into a refusal.

``ProbeDetector`` is SASA's (a linear probe on augmented-pass features) and, with a probe fitted on
plain-forward features, the no-projection baseline. ``HiddenDetect`` is the training-free baseline of
Jiang et al. 2025 (arXiv 2502.14744), by default as leigest519/HiddenDetect computes it
(``code/test.py`` ``test``, ``code/safety_aware_layers.py`` ``locate_most_safety_aware_layers``):

* refusal vector: a one-hot over the vocabulary of the *first* token of each of the 20 words of
  ``refusal_lst`` (``tokenizer.encode(w, add_special_tokens=False)[0]``);
* per layer: the last prompt position of each block's output (``hidden_states[1:]``) through the
  final norm and the unembedding, cosine similarity of those logits with the refusal vector. HF's
  ``hidden_states[-1]`` is already normed, and the official code norms it again; so does the default
  here (``last_layer="hf"``);
* score: ``np.trapz(F[s:e+1])`` (unit spacing; a one-layer range gives 0, as ``np.trapz`` does);
* layers: fixed per model in the official scripts (16–29 for llava-v1.6-vicuna-7b, 21–24 for
  Qwen-VL-Chat); for another model, ``locate_most_safety_aware_layers`` reports the layers whose
  refusal discrepancy (mean few-shot unsafe minus safe) exceeds the last layer's. The span from the
  first to the last of those is the automatic range here (``layer_rule="above-last"``).

The official code reports AUROC/AUPRC only; a guard also needs a threshold, which the project sets
on benign validation prompts at a target FPR (``sasa.detector.fit.fit_detectors``). The lens is the
adapter's (:meth:`~sasa.models.adapters.Adapter.logits_from_hidden`, soft-cap included), the one
logit lens of the package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from sasa.data.sample import Sample
from sasa.engine import SASAEngine, plain_engine
from sasa.engine.samples import batches, encode_samples
from sasa.models.adapters import Adapter
from sasa.models.compat import execution_device
from sasa.detector.probe import LinearProbe, threshold_at_fpr

logger = logging.getLogger(__name__)

HIDDENDETECT_REFUSAL_WORDS = (
    "Sorry", "sorry", "unfortunately", "unfortunate", "sadly", "explicit", "deadly", "crim", "criminal",
    "illegal", "dangerous", "harmful", "warning", "alarm", "caution", "shame", "conspiracy", "Subject",
    "contrary", "shouldn",
)
"""``refusal_lst`` of leigest519/HiddenDetect ``code/test.py`` (the same list in every script)."""

HIDDENDETECT_OFFICIAL_LAYERS: dict[str, tuple[int, int]] = {
    "llava-v1.6-vicuna-7b": (16, 29),  # code/test.py: test(dataset, model_path, s=16, e=29)
    "qwen-vl-chat": (21, 24),          # code/test_qwen.py: test(..., s=21, e=24)
}
"""The official scripts' fixed (s, e), inclusive 0-based block indices, by model name."""

TOKEN_RULES = ("first", "all-subtokens")
LAYER_RULES = ("above-last", "positive-run")
LAST_LAYER = ("hf", "block")


@dataclass(frozen=True)
class HiddenDetectConfig:
    """HiddenDetect's choices; the defaults are the official code's, the others named deviations.

    ``token_rule``: ``first`` (official) token of each refusal word, or ``all-subtokens`` of it.
    ``layer_rule`` (when no ``layers`` are given): ``above-last`` (official: span of the layers whose
    discrepancy exceeds the last layer's) or ``positive-run`` (longest run of layers with discrepancy
    > 0; the project's earlier rule). ``layers``: a fixed inclusive (s, e), as the official scripts
    hard-code per model. ``last_layer``: ``hf`` (the last block's output normed twice, as the
    official code does on HF's already-normed ``hidden_states[-1]``) or ``block`` (normed once).
    """

    token_rule: str = "first"
    layer_rule: str = "above-last"
    layers: tuple[int, int] | None = None
    last_layer: str = "hf"

    def __post_init__(self) -> None:
        for name, value, allowed in (("token_rule", self.token_rule, TOKEN_RULES),
                                     ("layer_rule", self.layer_rule, LAYER_RULES),
                                     ("last_layer", self.last_layer, LAST_LAYER)):
            if value not in allowed:
                raise ValueError(f"HiddenDetectConfig.{name} must be one of {allowed}, got {value!r}")
        if self.layers is not None:
            lo, hi = self.layers
            if not 0 <= lo <= hi:
                raise ValueError(f"HiddenDetectConfig.layers must be 0 <= s <= e, got {self.layers}")
            object.__setattr__(self, "layers", (int(lo), int(hi)))


def official_layers(model_name: str | None) -> tuple[int, int] | None:
    """The official scripts' fixed range for a model they were run on, matched by name."""
    name = (model_name or "").lower()
    return next((r for key, r in HIDDENDETECT_OFFICIAL_LAYERS.items() if key in name), None)


def hiddendetect_token_ids(tokenizer, words: Sequence[str], rule: str = "first") -> list[int]:
    """HiddenDetect's refusal tokens: the first token of each word (official) or all of its tokens."""
    ids: list[int] = []
    for w in words:
        toks = tokenizer.encode(w, add_special_tokens=False)
        if not toks:
            continue
        ids.extend(toks[:1] if rule == "first" else toks)
    return sorted(set(int(i) for i in ids))


class Detector(Protocol):
    name: str
    threshold: float

    def score(self, samples: Sequence[Sample]) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainingFeatures:
    """The features a probe was fitted on, one row per labelled sample (``keys``: each sample's id and label), so a
    refit on the same samples (:func:`sasa.attack.defence.adversarial_refit`) needs no new prefills.
    Kept as ``.npz`` of plain arrays, read without unpickling."""

    keys: tuple[str, ...]
    x: np.ndarray

    @classmethod
    def of(cls, samples: Sequence[Sample], x: np.ndarray) -> "TrainingFeatures":
        if len(samples) != len(x):
            raise ValueError(f"{len(samples)} samples but {len(x)} feature rows")
        return cls(tuple(f"{s.id}\0{s.label}" for s in samples), np.asarray(x))

    def for_samples(self, samples: Sequence[Sample]) -> np.ndarray | None:
        """The rows for exactly these samples in this order, or None when they are other samples."""
        return self.x if tuple(f"{s.id}\0{s.label}" for s in samples) == self.keys else None

    def save(self, path) -> None:
        from sasa.store.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(self.keys, dtype=str), x=self.x)

    @classmethod
    def load(cls, path) -> "TrainingFeatures":
        with np.load(path, allow_pickle=False) as z:
            return cls(tuple(str(k) for k in z["keys"]), z["x"])


@dataclass
class ProbeDetector:
    """A fitted probe and the engine configured as it was trained; ``training_features`` when the
    features it was fitted on are at hand (not part of its identity)."""

    engine: SASAEngine
    probe: LinearProbe
    name: str = "sasa"
    training_features: TrainingFeatures | None = field(default=None, repr=False, compare=False)

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
    """Training-free refusal-similarity detector; call :meth:`calibrate` with a few labelled prompts
    unless ``config.layers`` fixes the range (module docstring)."""

    adapter: Adapter
    config: HiddenDetectConfig = field(default_factory=HiddenDetectConfig)
    refusal_words: Sequence[str] = HIDDENDETECT_REFUSAL_WORDS
    threshold: float = 0.0
    name: str = "hiddendetect"
    layers: tuple[int, int] | None = field(init=False, default=None)
    token_ids: list[int] = field(init=False, default_factory=list, repr=False)
    _engine: SASAEngine = field(init=False, repr=False)
    _refusal: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        L = self.adapter.num_layers
        if self.config.layers is not None:
            if self.config.layers[1] >= L:
                raise ValueError(f"HiddenDetect layers {self.config.layers} out of range for {L} blocks "
                                 f"(0-based, inclusive)")
            self.layers = self.config.layers
        self._engine = plain_engine(self.adapter)
        vocab = self.adapter.unembedding.weight.shape[0]
        ids = [i for i in hiddendetect_token_ids(self.adapter.tokenizer, self.refusal_words, self.config.token_rule)
               if i < vocab]
        if not ids:
            raise ValueError("none of the refusal words map to tokens of this model")
        self.token_ids = ids
        self._refusal = torch.zeros(vocab)
        self._refusal[ids] = 1.0

    def layer_similarities(self, samples: Sequence[Sample]) -> np.ndarray:
        """[n, L] cosine similarity of each block's logit-lens logits with the refusal vector."""
        L = self.adapter.num_layers
        result = self._engine.prefill(encode_samples(self._engine, samples), capture_layers=range(L))
        with torch.inference_mode():
            return self.similarities(result.captured).cpu().numpy()

    def similarities(self, captured: dict[int, torch.Tensor]) -> torch.Tensor:
        """[n, L] refusal similarities from every block's last-position output (``captured[k]``,
        [n, D]); differentiable, so an attack can follow its gradient (:mod:`sasa.attack`)."""
        L = self.adapter.num_layers
        head = self.adapter.unembedding
        sims = []
        for k in range(L):
            h = captured[k].to(execution_device(head), head.weight.dtype).unsqueeze(1)  # last position
            if k == L - 1 and self.config.last_layer == "hf":
                h = self.adapter.final_norm(h)
            logits = self.adapter.logits_from_hidden(h)[:, -1].float().cpu()
            sims.append(torch.nn.functional.cosine_similarity(logits, self._refusal.unsqueeze(0), dim=-1))
        return torch.stack(sims, dim=1)

    def area(self, sims: torch.Tensor) -> torch.Tensor:
        """:meth:`_area` (the official np.trapz over the chosen range) in torch, differentiable."""
        lo, hi = self.layers if self.layers is not None else (0, sims.shape[1] - 1)
        part = sims[:, lo:hi + 1]
        if part.shape[1] == 1:
            return part[:, 0] * 0
        return ((part[:, 1:] + part[:, :-1]) / 2).sum(1)

    def calibrate(self, samples: Sequence[Sample], target_fpr: float = 0.05, batch_size: int = 8) -> dict:
        """Few-shot: the refusal discrepancy per layer and, unless fixed, the range it selects.

        The threshold set here (``target_fpr`` on these few benign shots) is provisional;
        :func:`sasa.detector.fit.fit_detectors` resets it on validation prompts.
        """
        sims = np.concatenate([self.layer_similarities(b) for b in batches(list(samples), batch_size)])
        return self.calibrate_similarities(sims, np.array([s.label == "harmful" for s in samples]), target_fpr)

    def calibrate_similarities(self, sims: np.ndarray, y: np.ndarray, target_fpr: float = 0.05) -> dict:
        """:meth:`calibrate` on refusal similarities already computed ([n, L]; ``y`` True = harmful),
        e.g. from the prefill that also gave the probes' features."""
        if y.all() or not y.any():
            raise ValueError("HiddenDetect calibration needs harmful and benign examples")
        gap = sims[y].mean(0) - sims[~y].mean(0)
        rule = "fixed" if self.config.layers is not None else self.config.layer_rule
        if self.config.layers is None:
            self.layers = select_layers(gap, self.config.layer_rule)
        if self.layers[0] == self.layers[1]:
            logger.warning("HiddenDetect range is one layer (%d): np.trapz gives 0 for every prompt", self.layers[0])
        scores = self._area(sims)
        self.threshold = threshold_at_fpr(scores[~y], target_fpr)
        return {"layers": list(self.layers), "rule": rule, "discrepancy": gap.tolist(), "threshold": self.threshold}

    def _area(self, sims: np.ndarray) -> np.ndarray:
        lo, hi = self.layers if self.layers is not None else (0, sims.shape[1] - 1)
        part = sims[:, lo:hi + 1]
        if part.shape[1] == 1:
            return np.zeros(part.shape[0])
        return ((part[:, 1:] + part[:, :-1]) / 2).sum(1)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return self._area(self.layer_similarities(samples))

    def digest(self) -> str:
        return _digest(self.name, self.threshold, self.layers, self.config, tuple(self.token_ids))


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


def select_layers(discrepancy: Sequence[float], rule: str = "above-last") -> tuple[int, int]:
    """HiddenDetect's automatic range from the per-layer refusal discrepancy (unsafe minus safe).

    ``above-last`` (official): from the first to the last layer whose discrepancy exceeds the last
    layer's; the whole depth when none does. ``positive-run``: the longest run with discrepancy > 0,
    the argmax layer when there is none.
    """
    gap = np.asarray(discrepancy, dtype=float)
    if rule == "above-last":
        above = np.flatnonzero(gap > gap[-1])
        if above.size == 0:
            logger.warning("HiddenDetect: no layer's discrepancy exceeds the last layer's; using all layers")
            return 0, gap.size - 1
        return int(above[0]), int(above[-1])
    if rule == "positive-run":
        return _longest_positive_run(gap)
    raise ValueError(f"unknown HiddenDetect layer rule {rule!r}; choose from {LAYER_RULES}")


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
