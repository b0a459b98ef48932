"""Bad input: a clear error naming file and row, or a counted, reported skip; never a silent drop."""

from __future__ import annotations

import json

import pytest

from sasa.data import DataError, load
from sasa.data.base import image_problem

from .data_fixtures import XSTEST_HEADER, png, write_csv, write_json


# ---- missing files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("figstep", "safebench.csv"),
    ("xstest", "xstest_prompts.csv"),
    ("mmsafetybench", "processed_questions"),
    ("vlguard", "test.json"),
    ("jailbreakv", "mini_JailBreakV_28K.csv"),
    ("harmbench", "harmbench_behaviors_text_test.csv"),
    ("strongreject", "strongreject_dataset.csv"),
    ("mossbench", "information.json"),
    ("mmvet", "mm-vet.json"),
    ("manifest", "manifest not found"),
])
def test_missing_files_raise_clearly(name, expected, tmp_path):
    target = tmp_path / "m.jsonl" if name == "manifest" else tmp_path
    with pytest.raises(DataError, match=expected):
        load(name, target, on_error="skip")  # nothing to skip: a missing file always raises


def test_missing_figstep_image_folder(fixture_tree):
    root = fixture_tree("figstep")
    for p in (root / "data" / "images" / "SafeBench").iterdir():
        p.unlink()
    (root / "data" / "images" / "SafeBench").rmdir()
    with pytest.raises(DataError, match="images/SafeBench not found"):
        load("figstep", root)
    assert len(load("figstep", root, variant="text")) == 6  # text needs no images


# ---- missing, corrupt and truncated images ---------------------------------------------------

def test_missing_image_raise_or_skip(fixture_tree):
    root = fixture_tree("figstep")
    gone = root / "data" / "images" / "SafeBench" / "query_ForbidQI_1_2_6.png"
    gone.unlink()
    with pytest.raises(DataError, match=r"safebench\.csv:3: image not found: .*query_ForbidQI_1_2_6\.png"):
        load("figstep", root)
    res = load("figstep", root, on_error="skip")
    assert len(res.samples) == 5 and len(res.skipped) == 1
    loc, reason = res.skipped[0]
    assert loc.endswith("safebench.csv:3") and "image not found" in reason
    assert "1 rows skipped" in res.report() and "safebench.csv:3" in res.report()
    assert len(load("figstep", root, check_images="none")) == 6  # user's choice: no check


def test_corrupt_and_truncated_images(fixture_tree):
    root = fixture_tree("mmvet")
    (root / "images" / "v1_0.png").write_bytes(b"this is not a png")
    good = root / "images" / "v1_1.jpg"
    good.write_bytes(good.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(DataError, match=r"mm-vet\.json\['v1_0'\]: image unreadable or corrupt: .*v1_0\.png"):
        load("mmvet", root)
    res = load("mmvet", root, on_error="skip")
    assert res.samples == [] and [r for _, r in res.skipped if "unreadable" in r] and len(res.skipped) == 2
    assert len(load("mmvet", root, check_images="exists")) == 2


def test_image_problem_on_a_real_png(tmp_path):
    p = png(tmp_path / "ok.png")
    assert image_problem(p) is None
    half = tmp_path / "half.png"
    half.write_bytes(p.read_bytes()[:30])
    assert "corrupt" in image_problem(half)
    assert "not found" in image_problem(tmp_path / "nope.png")


# ---- bad CSV rows, headers, encodings ---------------------------------------------------------

def test_bad_csv_row_named_by_physical_line(tmp_path):
    p = tmp_path / "xstest_prompts.csv"
    p.write_text(
        "id,prompt,type,label,focus,note\n"
        '1,"A prompt that spans\ntwo lines",homonyms,safe,x,y\n'   # lines 2-3
        "2,fine prompt,homonyms,safe,x,y\n"                         # line 4
        "3,too,many,fields,safe,x,y,z\n"                            # line 5
        "4,too few\n",                                              # line 6
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"xstest_prompts\.csv:5: row has 8 fields, header has 6"):
        load("xstest", tmp_path)
    res = load("xstest", tmp_path, on_error="skip")
    assert [s.id for s in res.samples] == ["xstest/1", "xstest/2"]
    assert [loc.rsplit(":", 1)[1] for loc, _ in res.skipped] == ["5", "6"]
    assert res.samples[0].prompt == "A prompt that spans\ntwo lines"


def test_missing_columns_and_empty_and_non_utf8(tmp_path):
    p = tmp_path / "xstest_prompts.csv"
    p.write_text("id,prompt,type\n1,x,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"xstest_prompts\.csv:1: missing required columns \['label', 'focus', 'note'\]"):
        load("xstest", tmp_path, on_error="skip")
    p.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty CSV file"):
        load("xstest", tmp_path)
    p.write_bytes(b"id,prompt,type,label,focus,note\n1,caf\xe9,t,safe,,\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load("xstest", tmp_path)


def test_unknown_label_and_duplicate_ids(tmp_path):
    write_csv(tmp_path / "xstest_prompts.csv", XSTEST_HEADER, [
        [1, "first", "homonyms", "safe", "", ""],          # line 2
        [2, "second", "homonyms", "maybe", "", ""],        # line 3: unknown label
        [1, "dup of first", "homonyms", "unsafe", "", ""],  # line 4: duplicate id
        [3, "", "homonyms", "safe", "", ""],               # line 5: empty prompt
    ])
    with pytest.raises(DataError, match=r":3: unknown label 'maybe'"):
        load("xstest", tmp_path)
    res = load("xstest", tmp_path, on_error="skip")
    assert [s.prompt for s in res.samples] == ["first"]
    reasons = dict((loc.rsplit(":", 1)[1], r) for loc, r in res.skipped)
    assert "unknown label" in reasons["3"]
    assert "duplicate sample id 'xstest/1'" in reasons["4"] and "xstest_prompts.csv:2" in reasons["4"]
    assert "neither prompt text nor image" in reasons["5"]
    assert len(res.samples) + len(res.skipped) == 4  # every row accounted for


def test_unknown_enumerations(fixture_tree):
    root = fixture_tree("jailbreakv")
    csv_path = root / "JailBreakV_28K" / "JailBreakV_28K.csv"
    csv_path.write_text(csv_path.read_text().replace("Persuade", "Telepathy"))
    with pytest.raises(DataError, match=r"JailBreakV_28K\.csv:3: unknown attack format 'Telepathy'"):
        load("jailbreakv", root, variant="full")
    assert len(load("jailbreakv", root, variant="full", on_error="skip").skipped) == 1


# ---- bad JSON files and records ---------------------------------------------------------------

def test_broken_json_names_line(fixture_tree):
    root = fixture_tree("mmvet")
    (root / "mm-vet.json").write_text('{\n  "v1_0": {"imagename": "v1_0.png",\n  oops\n}')
    with pytest.raises(DataError, match=r"mm-vet\.json:3: invalid JSON"):
        load("mmvet", root, on_error="skip")


def test_bad_json_records_raise_or_skip(fixture_tree):
    root = fixture_tree("vlguard")
    records = json.loads((root / "test.json").read_text())
    del records[1]["safe"]
    records.append("not an object")
    write_json(root / "test.json", records)
    with pytest.raises(DataError, match=r"test\.json\[1\]: record needs 'id'"):
        load("vlguard", root)
    res = load("vlguard", root, on_error="skip")
    assert [loc.split("[")[-1] for loc, _ in res.skipped] == ["1]", "3]"]
    assert {s.meta["group"] for s in res.samples} == {"vlguard/Ads_1", "vlguard/Ads_3"}


def test_missing_scenario_file_and_field(fixture_tree):
    root = fixture_tree("mmsafetybench")
    (root / "data" / "processed_questions" / "07-Sex.json").unlink()
    q = root / "data" / "processed_questions" / "02-HateSpeech.json"
    data = json.loads(q.read_text())
    del data["1"]["Rephrased Question"]
    write_json(q, data)
    with pytest.raises(DataError, match=r"02-HateSpeech\.json\['1'\]: missing field 'Rephrased Question'"):
        load("mmsafetybench", root)
    res = load("mmsafetybench", root, on_error="skip")
    assert len(res.samples) == 11 * 2 + 1
    assert len(res.skipped) == 2
    (loc1, why1), (loc2, why2) = res.skipped
    assert "02-HateSpeech.json['1']" in loc1 and "missing field" in why1
    assert loc2.endswith("07-Sex.json") and why2 == "scenario question file missing"


def test_bad_mossbench_type(fixture_tree):
    root = fixture_tree("mossbench")
    info = root / "data" / "images_information" / "information.json"
    data = json.loads(info.read_text())
    data["2"]["metadata"]["over"] = "type 9"
    write_json(info, data)
    with pytest.raises(DataError, match=r"information\.json\['2'\]: unknown oversensitivity type 'type 9'"):
        load("mossbench", root)


def test_bad_manifest_lines_skip(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join([
        '{"id": "a", "prompt": "x"}',
        "not json",
        '{"id": "b", "prompt": "y", "label": "toxic"}',
        '{"id": "a", "prompt": "again"}',
        '["a list"]',
        '{"id": "c", "prompt": "z", "colour": "red"}',
    ]) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:2: "):
        load("manifest", p)
    res = load("manifest", p, on_error="skip")
    assert [s.id for s in res.samples] == ["a"]
    assert [loc.rsplit(":", 1)[1] for loc, _ in res.skipped] == ["2", "3", "4", "5", "6"]
    assert "label 'toxic'" in res.skipped[1][1] and "duplicate" in res.skipped[2][1]


def test_on_error_value_checked(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        load("xstest", tmp_path, on_error="warn")
    with pytest.raises(ValueError, match="check_images"):
        load("xstest", tmp_path, check_images="maybe")
