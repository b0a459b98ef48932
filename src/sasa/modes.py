"""The one registry of modes: what each runs and what it needs.

The guard's modes, the evaluation's, the demo's and every command-line list derive from
:data:`MODES`, so a mode is declared once.  Every mode takes text and image prompts alike and every
answered response is judged by the evaluation's judges.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """One way of answering a prompt.

    detector: the fitted detector it scores with (a key of the evaluation's detectors), or None.
    guard: ``sasa.guard.Guard`` runs it (and so ``sasa generate`` and serving).
    augments: decodes from the projected (augmented) prefill.
    baseline: a published method compared against SASA, not SASA itself.
    """

    name: str
    description: str
    detector: str | None = None
    guard: bool = False
    augments: bool = False
    baseline: bool = False


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("vanilla", "the model as is", guard=True),
    Mode("detect", "SASA: probe on the augmented pass; flagged -> refusal, others -> vanilla decoding",
         detector="detect", guard=True),
    Mode("augment", "decode from the projected prefill (no detector)", guard=True, augments=True),
    Mode("augment+detect", "SASA's detector, then decoding from the projected prefill", detector="detect",
         guard=True, augments=True),
    Mode("probe-noproj", "the same probe recipe on plain-forward features", detector="probe-noproj", baseline=True),
    Mode("hiddendetect", "HiddenDetect: training-free refusal-similarity detector", detector="hiddendetect",
         baseline=True),
    Mode("adashield", "AdaShield-S: static defence prompt", baseline=True),
    Mode("ecso", "ECSO: answer, harm check with the image, caption, text-only answer", baseline=True),
)}

GUARD_MODES = tuple(name for name, m in MODES.items() if m.guard)
EVAL_MODES = tuple(MODES)
DETECTOR_MODES = tuple(name for name, m in MODES.items() if m.detector == name)
"""Modes that are a detector's decision alone: flagged -> refusal, the rest -> the vanilla answer."""
DEMO_MODES = ("vanilla",) + DETECTOR_MODES


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


def describe(modes: tuple[str, ...] = EVAL_MODES) -> str:
    """``name: description`` lines, for help texts and docstrings."""
    return "\n".join(f"  {m:15s} {MODES[m].description}" for m in modes)
