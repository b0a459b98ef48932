"""Splits by family: deterministic, disjoint, unseen families stay unseen, balance reported."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sasa.data import PRESETS, Sample, SplitPlan, assign_splits, class_balance, family, load, split_report


def _mixed(shared_data=None):
    """Benign set + FigStep text and images + XSTest, or fixture-free stand-ins without shared data."""
    samples = load("benign", variant="all").samples
    if shared_data is not None:
        samples += load("figstep", shared_data / "figstep", variant="all").samples
        samples += load("xstest", shared_data / "xstest").samples
    else:
        for i in range(60):
            g = f"fs/{i}"
            samples += [Sample(id=f"{g}/text", prompt=f"q{i}", label="harmful", source="figstep", attack="text",
                               meta={"group": g}),
                        Sample(id=f"{g}/img", prompt="p", label="harmful", source="figstep", attack="figstep",
                               meta={"group": g})]
    return samples


def test_split_is_deterministic_and_order_free(shared_data):
    samples = _mixed(shared_data)
    a = assign_splits(samples, "unseen-families")
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    b = assign_splits(shuffled, "unseen-families")
    assert {s.id: s.split for s in a} == {s.id: s.split for s in b}
    assert assign_splits(samples, "unseen-families") == a
    other_seed = assign_splits(samples, SplitPlan(**{**PRESETS["unseen-families"].__dict__, "seed": 1}))
    assert {s.id: s.split for s in other_seed} != {s.id: s.split for s in a}
    assert all(s.split is None for s in samples)  # inputs are not modified


def test_split_disjoint_and_families_unseen(shared_data):
    out = assign_splits(_mixed(shared_data), "unseen-families")
    by_split = {sp: {s.id for s in out if s.split == sp} for sp in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"])
    assert len(out) == len({s.id for s in out})  # each sample in exactly one split
    fam_sides = {}
    for s in out:
        fam_sides.setdefault(family(s), set()).add(s.split)
    assert fam_sides["figstep:text"] == {"train", "val"}  # a train family also feeds validation
    assert fam_sides["figstep:figstep"] == {"test"} and fam_sides["xstest:text"] == {"test"}
    assert fam_sides["sasa-benign:text"] == {"train", "val", "test"}  # shared family, cut by hash
    # within the shared family a group (instruction / its rendering) never straddles train and test
    groups = {}
    for s in out:
        if s.source == "sasa-benign":
            groups.setdefault(s.meta["group"], set()).add(s.split)
    assert all(len(v) == 1 for v in groups.values())
    bal = class_balance(out)
    assert bal["train"]["harmful"] + bal["val"]["harmful"] == 500 and bal["train"]["benign"] > 0
    assert bal["val"]["benign"] > 0
    assert bal["test"]["benign"] > 250 and bal["test"]["harmful"] == 700


def test_shared_fraction_and_group_cohesion():
    samples = []
    for i in range(400):
        g = f"g{i}"
        samples += [Sample(id=f"{g}/a", prompt="x", label="benign", source="b", attack="text", meta={"group": g}),
                    Sample(id=f"{g}/b", prompt="x", label="benign", source="b", attack="figstep-render",
                           meta={"group": g})]
    plan = SplitPlan(shared=("b:*",), train_fraction=0.6, val_fraction=0.2)
    out = assign_splits(samples, plan)
    c = Counter(s.split for s in out)
    assert abs(c["train"] / len(out) - 0.6) < 0.08 and abs(c["val"] / len(out) - 0.2) < 0.06
    sides = {}
    for s in out:
        sides.setdefault(s.meta["group"], set()).add(s.split)
    assert all(len(v) == 1 for v in sides.values())


def test_unmatched_families_left_out_and_reported():
    samples = [Sample(id="a", prompt="x", label="harmful", source="figstep", attack="text"),
               Sample(id="b", prompt="x", label="benign", source="xstest", attack="text"),
               Sample(id="c", prompt="x", label="harmful", source="jailbreakv", attack="template")]
    plan = SplitPlan(train=("figstep:*",), test=("xstest:*",))
    out = assign_splits(samples, plan)
    assert [(s.id, s.split) for s in out] == [("a", "train"), ("b", "test")]
    rep = split_report(out, samples)
    assert rep.unused == Counter({"jailbreakv:template": 1})
    text = rep.format()
    assert "left out" in text and "jailbreakv:template 1" in text
    assert "train" in text and "figstep:text" in text


def test_report_counts_per_split_and_family():
    samples = assign_splits(_mixed(), "unseen-families")
    rep = split_report(samples)
    assert sum(sum(c.values()) for c in rep.by_split.values()) == len(samples)
    assert (rep.by_family[("train", "figstep:text")]["harmful"]
            + rep.by_family[("val", "figstep:text")]["harmful"]) == 60
    assert rep.by_family[("test", "figstep:figstep")]["harmful"] == 60
    assert "%" in rep.format()


def test_presets_and_plan_validation():
    assert set(PRESETS) >= {"unseen-families", "builtin", "text-to-image", "random"}
    with pytest.raises(ValueError):
        SplitPlan(train_fraction=0.8, val_fraction=0.3)
    with pytest.raises(ValueError, match="unknown split preset"):
        assign_splits([], "nope")
    out = assign_splits(_mixed(), "text-to-image")
    assert {s.split for s in out if s.attack == "figstep"} == {"test"}
    assert {s.split for s in out if s.attack in ("text", "statement")} == {"train"}
