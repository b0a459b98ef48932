"""The modes: each is one object that declares what it needs and answers a batch.

The guard (and so ``sasa generate`` and serving), the evaluation, the demo and every command-line
list dispatch through :data:`MODES`, so a mode is declared once and behaves in one place.  Every
mode takes text and image prompts alike; the evaluation judges every answered response.

Two entry points, one per caller:

* :meth:`GuardMode.generate` -- encoded inputs in, :class:`GuardedOutput` out (the guard's modes:
  ``vanilla``, ``detect``, ``augment``, ``augment+detect``);
* :meth:`Mode.answer` -- samples in, :class:`Answer` out (every mode, for the evaluation).

A detector mode answers a passing prompt with exactly ``vanilla``'s tokens (the engine decodes from
pass 1's cache; tests/test_engine.py), so in an evaluation that ran ``vanilla`` first its answers are
reused and the latency recorded is score time + that sample's vanilla time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers import StoppingCriteriaList

from sasa.guard.defences import AdaShieldConfig, ECSOConfig, adashield_prompt, ecso, plain_generate
from sasa.data.sample import Sample
from sasa.detector.detectors import Detector, HiddenDetect, ProbeDetector, detector_digest
from sasa.engine import SASAEngine, plain_engine
from sasa.engine.decoding import StepClock, generate_plain
from sasa.engine.samples import encode_samples, load_image
from sasa.models.adapters import Adapter

REFUSAL = "I'm sorry, but I can't help with that request."
"""What a refused prompt is answered with, unless the caller gives its own message."""


@dataclass
class GuardedOutput:
    """One prompt's outcome under a guard mode (score is the probe's risk logit, if a probe ran;
    latency_s is this prompt's: from the batch's start to its refusal or its last token)."""

    text: str
    refused: bool
    score: float | None
    mode: str
    latency_s: float
    n_new_tokens: int
    id: str | None = None


@dataclass
class Answer:
    """One sample's outcome under a mode, before any judge reads it (latency_s: from the batch's
    start to this sample's decision or last token)."""

    text: str
    decision: str = "answer"  # or "refuse": the mode refused before generating
    score: float | None = None
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Guarding:
    """What a guard mode decodes with (:class:`sasa.guard.generation.Guard` is one)."""

    adapter: Adapter
    probe: Any = None
    engine: SASAEngine | None = None
    refusal_message: str = REFUSAL
    project_decoding: bool = False


@dataclass
class RunContext:
    """What an evaluation hands its modes: the model, the fitted detectors and the settings."""

    adapter: Adapter
    detectors: dict[str, Detector] = field(default_factory=dict)
    augment_engine: SASAEngine | None = None
    max_new_tokens: int = 64
    refusal: str = REFUSAL
    adashield: AdaShieldConfig = field(default_factory=AdaShieldConfig)
    ecso: ECSOConfig = field(default_factory=ECSOConfig)


def _images(chunk: Sequence[Sample]) -> list[Any] | None:
    images = [load_image(s) for s in chunk]
    return images if any(i is not None for i in images) else None


class Mode:
    """One way of answering a prompt.

    detector: the fitted detector it scores with (a key of the evaluation's detectors), or None.
    guard: the guard runs it (a :class:`GuardMode`: ``sasa generate`` and serving).
    augments: decodes from the projected (augmented) prefill.
    baseline: a published method compared against SASA, not SASA itself.
    """

    guard = False
    augments = False
    detects = False

    def __init__(self, name: str, description: str, detector: str | None = None, baseline: bool = False) -> None:
        self.name, self.description, self.detector, self.baseline = name, description, detector, baseline

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def check(self, run: RunContext) -> None:
        """Raise ``ValueError`` naming what this run lacks for the mode."""
        if self.detector and self.detector not in run.detectors:
            raise ValueError(f"mode {self.name!r} needs a fitted {self.detector!r} detector")

    def pins(self, run: RunContext) -> dict[str, str]:
        """What fixes this mode's answers beside the model: a run directory resumes only under the same."""
        if self.detector and self.detector in run.detectors:
            return {self.detector: detector_digest(run.detectors[self.detector])}
        return {}

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        """Answers for a batch; ``vanilla`` holds this run's vanilla records by sample id (reusable)."""
        raise NotImplementedError


class GuardMode(Mode):
    """A mode the guard runs on encoded inputs: vanilla, detect, augment, augment+detect."""

    guard = True

    def __init__(self, name: str, description: str, detects: bool = False, augments: bool = False) -> None:
        super().__init__(name, description, detector="detect" if detects else None)
        self.detects, self.augments = detects, augments

    def generate(self, guard: Guarding, inputs: dict, max_new_tokens: int = 64,
                 on_decision: Callable[[list[float | None], list[bool]], None] | None = None,
                 **generate_kwargs: Any) -> list[GuardedOutput]:
        """Guarded generation of encoded inputs. ``on_decision(scores, refused)`` is called once the
        guard has decided, before the first token is decoded (a server streams refusals at once)."""
        clock = StepClock()
        decided_at: list[float] = []
        n = inputs["input_ids"].shape[0]
        scores: list[float | None] = [None] * n
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [*(generate_kwargs.get("stopping_criteria") or []), clock])
        if not (self.detects or self.augments):
            if on_decision is not None:
                on_decision(list(scores), [False] * n)
            ids, texts = generate_plain(guard.adapter, inputs, max_new_tokens, **generate_kwargs)
            refused = [False] * n
        else:
            probe = guard.probe

            def decide(result: Any) -> torch.Tensor:
                logit = probe.decision_function(result.features)
                scores[:] = [float(v) for v in logit]
                refuse = torch.as_tensor(logit > probe.threshold)
                decided_at.append(time.perf_counter())
                if on_decision is not None:
                    on_decision(list(scores), [bool(v) for v in refuse])
                return refuse

            if on_decision is not None and not self.detects:
                on_decision(list(scores), [False] * n)
            out = guard.engine.generate(inputs, decide=decide if self.detects else None, augment=self.augments,
                                        max_new_tokens=max_new_tokens, project_decoding=guard.project_decoding,
                                        **generate_kwargs)
            refused, ids = out.refused, out.token_ids
            texts = [guard.refusal_message if r else t for r, t in zip(refused, out.texts)]
        latencies = clock.latencies(ids, refused, decided_at[0] if decided_at else None)
        return [GuardedOutput(t, r, sc, self.name, lat, len(i))
                for t, r, sc, i, lat in zip(texts, refused, scores, ids, latencies)]

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        guard = Guarding(run.adapter, refusal_message=run.refusal)
        outs = self.generate(guard, encode_samples(run.adapter, chunk), run.max_new_tokens)
        return [Answer(o.text, latency_s=o.latency_s) for o in outs]


class DetectorMode(Mode):
    """A detector's decision alone: flagged -> the refusal, the rest -> the vanilla answer."""

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        start = time.perf_counter()
        n = len(chunk)
        det = run.detectors[self.detector]
        raw = det.score(chunk)
        scored = time.perf_counter() - start
        answers = [Answer(run.refusal, "refuse", float(v), scored) if v > det.threshold else None for v in raw]
        need = [i for i in range(n) if answers[i] is None and chunk[i].id not in vanilla]
        fresh = dict(zip(need, VANILLA.answer(run, [chunk[i] for i in need], {}) if need else []))
        for i in range(n):
            if answers[i] is None:
                text, took = ((fresh[i].text, fresh[i].latency_s) if i in fresh
                              else (vanilla[chunk[i].id]["response"], vanilla[chunk[i].id]["latency_s"] or 0.0))
                answers[i] = Answer(text, score=float(raw[i]), latency_s=scored + took)
        return answers


class SASADetect(GuardMode, DetectorMode):
    """SASA's detector: a guard mode, and in an evaluation a detector mode like the baselines'."""

    def __init__(self) -> None:
        GuardMode.__init__(self, "detect", "SASA: probe on the augmented pass; flagged -> refusal, others -> "
                           "vanilla decoding", detects=True)

    answer = DetectorMode.answer


class Augment(GuardMode):
    """Decoding from the projected prefill, with or without SASA's detector in front."""

    def check(self, run: RunContext) -> None:
        if self.detects and "detect" not in run.detectors:
            raise ValueError(f"mode {self.name!r} needs a fitted 'detect' detector")
        if run.augment_engine is None and "detect" not in run.detectors:
            raise ValueError(f"mode {self.name!r} needs an engine (or the SASA detector's)")

    def pins(self, run: RunContext) -> dict[str, str]:
        pins = {"detect": detector_digest(run.detectors["detect"])} if "detect" in run.detectors else {}
        if not self.detects and run.augment_engine is not None:
            e = run.augment_engine
            pins["augment-engine"] = repr((e.s, e.f, e.projection, e.features))
        return pins

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        det = run.detectors.get("detect")
        engine = getattr(det, "engine", None) or run.augment_engine
        guard = Guarding(run.adapter, getattr(det, "probe", None), engine, run.refusal)
        outs = self.generate(guard, encode_samples(engine, chunk), run.max_new_tokens)
        return [Answer(o.text, "refuse" if o.refused else "answer", o.score, o.latency_s) for o in outs]


class AdaShield(Mode):
    """AdaShield-S: the published static defence prompt before the request (sasa.guard.defences)."""

    def pins(self, run: RunContext) -> dict[str, str]:
        return {"adashield": repr(run.adashield)}

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        texts, latencies = plain_generate(run.adapter, [adashield_prompt(s.prompt, run.adashield) for s in chunk],
                                          _images(chunk), run.max_new_tokens)
        return [Answer(t, latency_s=lat) for t, lat in zip(texts, latencies)]


class ECSO(Mode):
    """ECSO: answer, harm check with the image, caption, text-only answer (sasa.guard.defences)."""

    def pins(self, run: RunContext) -> dict[str, str]:
        return {"ecso": repr(run.ecso)}

    def answer(self, run: RunContext, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Answer]:
        outs = ecso(run.adapter, [s.prompt for s in chunk], _images(chunk), run.max_new_tokens, run.ecso)
        return [Answer(o.response, latency_s=o.latency_s,
                       extra={"ecso_check": o.check, "ecso_unsafe": o.flagged_unsafe, "ecso_caption": o.caption})
                for o in outs]


VANILLA = GuardMode("vanilla", "the model as is")

MODES: dict[str, Mode] = {m.name: m for m in (
    VANILLA,
    SASADetect(),
    Augment("augment", "decode from the projected prefill (no detector)", augments=True),
    Augment("augment+detect", "SASA's detector, then decoding from the projected prefill", detects=True,
            augments=True),
    DetectorMode("probe-noproj", "the same probe recipe on plain-forward features", detector="probe-noproj",
                 baseline=True),
    DetectorMode("hiddendetect", "HiddenDetect: training-free refusal-similarity detector", detector="hiddendetect",
                 baseline=True),
    AdaShield("adashield", "AdaShield-S: static defence prompt", baseline=True),
    ECSO("ecso", "ECSO: answer, harm check with the image, caption, text-only answer", baseline=True),
)}

GUARD_MODES = tuple(name for name, m in MODES.items() if m.guard)
EVAL_MODES = tuple(MODES)
DETECTOR_MODES = tuple(name for name, m in MODES.items() if isinstance(m, DetectorMode))
"""Modes that are a detector's decision alone: flagged -> refusal, the rest -> the vanilla answer."""
DEMO_MODES = ("vanilla",) + DETECTOR_MODES


def fusable(run: RunContext, modes: Sequence[str]) -> list[str]:
    """The modes one guarded prefill per sample can answer together: ``vanilla`` and the detector
    modes whose detectors read that prefill -- probes on next-token logits of one engine set-up
    (same (s, f) and projection; SASA's reads the projected pass, the no-projection probe the plain
    one) and HiddenDetect (every block's last-position output of the plain pass).  Empty when fewer
    than two such modes run or ``vanilla`` is not among them."""
    group = [m for m in modes if m == "vanilla" or isinstance(MODES[m], DetectorMode)]
    if "vanilla" not in group or len(group) < 2:
        return []
    setups = set()
    for m in group:
        if m == "vanilla":
            continue
        det = run.detectors.get(MODES[m].detector)
        if isinstance(det, ProbeDetector):
            if det.engine.features.kind != "logits" or det.engine.adapter is not run.adapter:
                return []
            setups.add((det.engine.s, det.engine.f, det.engine.projection))
        elif not isinstance(det, HiddenDetect) or det.adapter is not run.adapter:
            return []
    return group if len(setups) <= 1 else []


def fused_answers(run: RunContext, chunk: Sequence[Sample], modes: Sequence[str]) -> dict[str, list[Answer]]:
    """Every mode of ``modes`` (from :func:`fusable`) on ``chunk`` from one guarded generation: the
    engine's prefill gives SASA's features, the plain logits and every block's output, and the
    prompts then decode from pass 1's cache, which is exactly plain ``generate`` (tests/test_engine.py).
    Each detector mode's answer is the refusal when its score passes its threshold, else that
    vanilla text: the same records as running the modes one by one, at the cost of one pass.  A
    refusal's latency is the prefill's, an answer's the time to its last token."""
    clock = StepClock()
    n = len(chunk)
    detectors = {m: run.detectors[MODES[m].detector] for m in modes if m != "vanilla"}
    probes = sorted((d for d in detectors.values() if isinstance(d, ProbeDetector)),
                    key=lambda d: not d.engine.features.projected)  # a projected probe's engine reads both
    engine = probes[0].engine if probes else plain_engine(run.adapter)
    capture = range(run.adapter.num_layers) if any(isinstance(d, HiddenDetect) for d in detectors.values()) else ()
    decided_at: list[float] = []

    def decide(result: Any) -> torch.Tensor:
        decided_at.append(time.perf_counter())
        return torch.zeros(n, dtype=torch.bool)

    out = engine.generate(encode_samples(engine, chunk), decide=decide, capture_layers=capture,
                          max_new_tokens=run.max_new_tokens, stopping_criteria=StoppingCriteriaList([clock]))
    result = out.prefill
    answered = clock.latencies(out.token_ids)
    prefilled = decided_at[0] - clock.start
    answers = {"vanilla": [Answer(t, latency_s=lat) for t, lat in zip(out.texts, answered)]}
    for m, det in detectors.items():
        if isinstance(det, HiddenDetect):
            with torch.inference_mode():
                raw = det.area(det.similarities(result.captured)).numpy()
        else:
            raw = det.probe.decision_function(result.features if det.engine.features.projected
                                              else result.logits_vanilla)
        answers[m] = [Answer(run.refusal, "refuse", float(v), prefilled) if v > det.threshold
                      else Answer(t, score=float(v), latency_s=lat) for v, t, lat in zip(raw, out.texts, answered)]
    return answers


def parse_modes(text: str | list[str] | tuple[str, ...], allowed: tuple[str, ...] = EVAL_MODES) -> list[str]:
    """A comma list (or a list) of modes, checked against ``allowed``; order kept, repeats dropped."""
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(m for m in names if m))
    unknown = [m for m in names if m not in allowed]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {', '.join(allowed)}")
    if not names:
        raise ValueError("no mode given")
    return names


def detectors_needed(modes: list[str] | tuple[str, ...]) -> list[str]:
    """The detectors these modes score with, in registry order."""
    wanted = {MODES[m].detector for m in modes if MODES[m].detector}
    return [name for name in DETECTOR_MODES if name in wanted]
