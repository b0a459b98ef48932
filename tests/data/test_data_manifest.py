"""Manifest round trips: any loader's output written to JSONL reads back unchanged."""

from __future__ import annotations

import json

import pytest

from sasa.data import ManifestError, Sample, load, read_manifest, write_manifest
from sasa.data.sample import iter_manifest

FIXTURE_CASES = [
    ("figstep", "all"), ("xstest", "all"), ("mmsafetybench", "all"), ("vlguard", "all"),
    ("jailbreakv", "full"), ("harmbench", "all"), ("strongreject", "full"), ("mossbench", "all"),
    ("mmvet", "all"),
]


@pytest.mark.parametrize("name,variant", FIXTURE_CASES)
def test_round_trip_fixture_loaders(name, variant, fixture_tree, tmp_path):
    samples = load(name, fixture_tree(name), variant=variant).samples
    assert samples
    out = write_manifest(samples, tmp_path / "m" / f"{name}.jsonl")
    assert read_manifest(out) == samples
    assert load("manifest", out).samples == samples


def test_round_trip_real_and_packaged(shared_data, tmp_path):
    samples = (load("figstep", shared_data / "figstep", variant="all").samples
               + load("xstest", shared_data / "xstest").samples
               + load("benign", variant="all").samples)
    out = write_manifest(samples, tmp_path / "all.jsonl")
    assert read_manifest(out) == samples


def test_relative_images_round_trip(fixture_tree, tmp_path):
    samples = load("mmvet", fixture_tree("mmvet")).samples
    out = write_manifest(samples, tmp_path / "mmvet" / "m.jsonl", relative_images=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["image"] == "images/v1_0.png"  # relative on disk
    assert read_manifest(out) == samples  # absolute again after reading


def test_write_is_atomic_and_leaves_no_temp_on_failure(tmp_path):
    out = tmp_path / "m.jsonl"
    write_manifest([Sample(id="a", prompt="x")], out)

    def bad():
        yield Sample(id="b", prompt="y")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_manifest(bad(), out)
    assert read_manifest(out) == [Sample(id="a", prompt="x")]  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left


def test_read_manifest_errors_name_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "prompt": "x"}\n\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:3: duplicate sample id 'a'"):
        read_manifest(p)
    p.write_text('{"id": "a", "prompt": "x", "label": "evil"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1: .*label 'evil'"):
        read_manifest(p)
    items = list(iter_manifest(p))
    assert items[0][0] == 1 and isinstance(items[0][1], ManifestError)
