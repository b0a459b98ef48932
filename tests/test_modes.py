"""The mode registry: every list of modes derives from it, and what a mode needs is checked."""

import pytest

from sasa import cli
from sasa.guard.modes import EVAL_MODES, GUARD_MODES, MODES, detectors_needed, parse_modes


def test_the_commands_offer_the_registrys_modes_and_each_mode_says_what_it_is():
    parser = cli.build_parser()
    gen = next(a for a in parser._subparsers._group_actions[0].choices["generate"]._actions if a.dest == "mode")
    assert tuple(gen.choices) == GUARD_MODES
    assert all(MODES[m].guard for m in GUARD_MODES) and not any(MODES[m].guard for m in EVAL_MODES
                                                                  if m not in GUARD_MODES)


def test_parse_modes_and_what_they_need():
    assert parse_modes("vanilla, detect,,detect") == ["vanilla", "detect"]
    assert detectors_needed(["augment+detect", "hiddendetect", "adashield"]) == ["detect", "hiddendetect"]
    assert detectors_needed(["augment", "ecso"]) == []
    with pytest.raises(ValueError, match="unknown modes \\['detekt'\\]"):
        parse_modes("vanilla,detekt")
    with pytest.raises(ValueError, match="no mode"):
        parse_modes(" , ")
    with pytest.raises(ValueError, match="unknown modes"):
        parse_modes(["probe-noproj"], allowed=GUARD_MODES)


def test_evaluate_refuses_unknown_modes_as_a_usage_error(caplog):
    code = cli.main(["evaluate", "--model", "unused", "--data", "unused.jsonl", "--modes", "vanilla,detekt",
                     "--out", "unused"])
    assert code == 2 and "detekt" in caplog.text


class NeverFlags:
    """A detector (sasa.detector.detectors.Detector) that passes every prompt: scores 0, threshold 1."""

    name, threshold = "never", 1.0

    def score(self, samples):
        import numpy as np

        return np.zeros(len(samples))


def test_a_detector_mode_answers_a_passing_prompt_with_vanillas_exact_text():
    """The one plain path: without a vanilla record to reuse, a detector mode's answer is vanilla's
    text itself (before, it went through the baselines' path, which strips whitespace)."""
    from conftest import tiny_adapter
    from sasa.data.sample import Sample
    from sasa.guard.modes import VANILLA, RunContext

    run = RunContext(tiny_adapter("llama"), {"probe-noproj": NeverFlags()}, max_new_tokens=6)
    samples = [Sample(f"s{i}", p) for i, p in enumerate(["bake bread", "water plants", "tidy a room"])]
    plain = [a.text for a in VANILLA.answer(run, samples, {})]
    assert any(t != t.strip() for t in plain)  # the tiny llama answers with newlines: stripping would show
    answers = MODES["probe-noproj"].answer(run, samples, {})
    assert [a.text for a in answers] == plain
    assert [a.decision for a in answers] == ["answer"] * 3 and [a.score for a in answers] == [0.0] * 3
    reused = MODES["probe-noproj"].answer(run, samples, {"s1": {"response": "kept", "latency_s": 2.0}})
    assert reused[1].text == "kept" and reused[1].latency_s >= 2.0


def test_each_mode_checks_what_the_run_lacks():
    from conftest import tiny_adapter
    from sasa.guard.modes import GuardMode, RunContext

    run = RunContext(tiny_adapter("llama"))
    for name in ("detect", "augment+detect", "probe-noproj", "hiddendetect"):
        with pytest.raises(ValueError, match="needs a fitted"):
            MODES[name].check(run)
    with pytest.raises(ValueError, match="needs an engine"):
        MODES["augment"].check(run)
    for name in ("vanilla", "adashield", "ecso"):
        MODES[name].check(run)
    assert {m for m, mode in MODES.items() if isinstance(mode, GuardMode)} == set(GUARD_MODES)
