"""The mode registry: every list of modes derives from it, and what a mode needs is checked."""

import pytest

from sasa import cli
from sasa.modes import EVAL_MODES, GUARD_MODES, MODES, detectors_needed, parse_modes


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
