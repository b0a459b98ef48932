"""The sasa command line on tiny models saved to disk (the local-directory loading path)."""

import json

import pytest

from sasa.cli import main
from sasa.data.sample import Sample, write_manifest
from sasa.testing.tiny_models import save_tiny

HARM = ["zorp the vault now", "zorp a bank", "how to zorp locks", "zorp the safe", "zorp every door", "zorp cars"]
SAFE = ["bake bread", "water the plants", "tidy a room", "read a book", "paint the fence", "walk the dog"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    save_tiny("llama", d / "llama")
    save_tiny("qwen2", d / "qwen2")
    samples = [Sample(f"h{i}", p, label="harmful") for i, p in enumerate(HARM)]
    samples += [Sample(f"b{i}", p, label="benign") for i, p in enumerate(SAFE)]
    write_manifest(samples, d / "data.jsonl")
    return d


def test_probe_fit_then_guarded_generate(workdir, capsys):
    probe = workdir / "probe"
    assert main(["probe", "fit", "--model", str(workdir / "llama"), "--data", str(workdir / "data.jsonl"),
                 "--layers", "2", "4", "--out", str(probe), "--target-fpr", "0.25", "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["val_fpr"] <= 0.25
    assert report["detector"] == str(probe)
    config = json.loads((probe / "config.json").read_text())
    assert config["layers"]["safety"] == 2 and config["model_fingerprint"]["model_type"] == "llama"
    out = workdir / "out.jsonl"
    assert main(["generate", "--model", str(workdir / "llama"), "--mode", "detect", "--detector", str(probe),
                 "--data", str(workdir / "data.jsonl"), "--out", str(out), "--max-new-tokens", "3"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"h{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
    assert all(isinstance(r["score"], float) and r["mode"] == "detect" for r in lines)
    # rerun: nothing recomputed, nothing duplicated
    assert main(["generate", "--model", str(workdir / "llama"), "--mode", "detect", "--detector", str(probe),
                 "--data", str(workdir / "data.jsonl"), "--out", str(out), "--max-new-tokens", "3"]) == 0
    assert len(out.read_text().splitlines()) == 12


def test_probe_for_another_model_is_refused(workdir, caplog):
    probe = workdir / "probe2"
    assert main(["probe", "fit", "--model", str(workdir / "llama"), "--data", str(workdir / "data.jsonl"),
                 "--layers", "1", "3", "--out", str(probe), "--batch-size", "4"]) == 0
    code = main(["generate", "--model", str(workdir / "qwen2"), "--mode", "detect", "--detector", str(probe),
                 "--prompt", "hello"])
    assert code == 1  # a runtime failure: the files do not fit together
    assert "another model" in caplog.text


def test_bad_layers_on_the_command_line(workdir, caplog):
    code = main(["generate", "--model", str(workdir / "llama"), "--mode", "augment", "--layers", "4", "9",
                 "--prompt", "hello"])
    assert code == 2 and "out of range" in caplog.text


def test_models_and_data_commands(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("llava", "qwen2_vl", "gemma3", "internvl", "smolvlm", "llama"):
        assert name in out
    assert main(["data", "list"]) == 0
    assert "figstep" in capsys.readouterr().out


def test_layers_conflicting_with_a_probe_are_refused(workdir, caplog):
    probe = workdir / "probe3"
    assert main(["probe", "fit", "--model", str(workdir / "llama"), "--data", str(workdir / "data.jsonl"),
                 "--layers", "1", "3", "--out", str(probe), "--batch-size", "4"]) == 0
    code = main(["generate", "--model", str(workdir / "llama"), "--mode", "detect", "--detector", str(probe),
                 "--layers", "2", "4", "--prompt", "hello"])
    assert code == 2 and "cannot be combined" in caplog.text


def test_one_list_syntax_and_usage_errors_exit_2(workdir, caplog, capsys):
    from sasa.cli import build_parser

    parser = build_parser()
    for spelled in (["--layers", "1,3"], ["--layers", "1", "3"]):
        args = parser.parse_args(["generate", "--prompt", "x", *spelled])
        assert args.layers == [1, 3]
    for bad in (["--layers", "1,2,3"], ["--layers", "one,two"], ["--dtype", "int4"]):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["generate", "--prompt", "x", *bad])
        assert stop.value.code == 2
    code = main(["generate", "--model", str(workdir / "llama"), "--mode", "detect", "--prompt", "hello"])
    assert code == 2 and "needs --detector" in caplog.text
    assert main(["generate", "--model", str(workdir / "llama"), "--prompt", "hello", "--max-new-tokens", "2"]) == 0
    said = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert said["decision"] == "answer" and said["mode"] == "vanilla" and said["score"] is None  # no probe: vanilla, nothing scored
    code = main(["generate", "--model", str(workdir / "missing-model"), "--prompt", "hello"])
    assert code == 1  # a runtime failure, not a usage error


def test_on_error_skip_records_a_malformed_manifest_line_and_retry_errors_reruns_it(workdir, tmp_path):
    """A malformed line and an unreadable sample become error records naming them; the others run;
    a plain rerun keeps the errors, --retry-errors (after the fix) runs them again."""
    lines = ['{"id": "a", "prompt": "bake bread"}', '{"id": "b", "prompt": "water the plants"',  # unclosed
             '{"id": "c", "prompt": "tidy a room"}', '{"id": "a", "prompt": "a duplicate id"}']
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    base = ["generate", "--model", str(workdir / "llama"), "--data", str(data), "--out", str(out),
            "--max-new-tokens", "2"]
    assert main(base) != 0 and not out.exists()  # by default a malformed line stops the run before it starts
    assert main(base + ["--on-error", "skip"]) == 0
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["a"]["decision"] == recs["c"]["decision"] == "answer"
    assert recs["bad.jsonl:2"]["decision"] == "error" and "bad.jsonl:2" in recs["bad.jsonl:2"]["error"]
    assert recs["bad.jsonl:4"]["decision"] == "error" and "duplicate sample id 'a'" in recs["bad.jsonl:4"]["error"]
    lines[1], lines[3] = '{"id": "b", "prompt": "water the plants"}', ""
    data.write_text("\n".join(lines) + "\n")
    assert main(base + ["--on-error", "skip"]) == 0  # "b" is new now; without --retry-errors the errors stand
    assert sum(json.loads(line)["decision"] == "error" for line in out.read_text().splitlines()) == 2
    assert main(base + ["--on-error", "skip", "--retry-errors"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["a", "b", "c"] and all(r["decision"] == "answer" for r in recs)


def test_a_newcomers_mistakes_are_reported_before_any_model_loads(tmp_path, caplog):
    """A model path that does not exist would fail with exit 1 if it were loaded: exit 2 and the
    option's name show that the check came first."""
    missing_model = str(tmp_path / "no-model")
    assert main(["generate", "--model", missing_model, "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "--data" in caplog.text and "no such file" in caplog.text
    assert main(["generate", "--model", missing_model, "--prompt", "hi", "--mode", "detect"]) == 2
    assert "needs --detector" in caplog.text
    assert main(["evaluate", "--model", missing_model, "--data", "builtin", "--detector", str(tmp_path / "nodet"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "--detector" in caplog.text and "not found" in caplog.text
    assert main(["demo", "--quick", "--full", "--model", missing_model, "--out", str(tmp_path / "demo")]) == 2
    assert "exclude each other" in caplog.text


def test_version_models_and_defaults_in_help(capsys):
    import sasa

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"sasa {sasa.__version__}"
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "sasa-organism" in listed and "smollm2-135m" in listed and "llava" in listed
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max-new-tokens MAX_NEW_TOKENS (default: 64)" in help_text and "--threads" in help_text


def test_limit_runs_only_the_first_samples(workdir, tmp_path):
    out = tmp_path / "first.jsonl"
    assert main(["generate", "--model", str(workdir / "llama"), "--data", str(workdir / "data.jsonl"),
                 "--limit", "3", "--max-new-tokens", "2", "--out", str(out), "--threads", "1"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["h0", "h1", "h2"]


def test_the_old_detector_flag_names_still_work_and_say_they_are_deprecated(workdir, tmp_path, capsys):
    probe = tmp_path / "det"
    assert main(["probe", "fit", "--model", str(workdir / "llama"), "--data", str(workdir / "data.jsonl"),
                 "--layers", "2", "4", "--out", str(probe), "--target-fpr", "0.25"]) == 0
    capsys.readouterr()
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    base = ["generate", "--model", str(workdir / "llama"), "--prompt", "bake bread", "--max-new-tokens", "2"]
    assert main(base + ["--detector", str(probe), "--out", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(base + ["--probe", str(probe), "--out", str(old)]) == 0
    assert "--probe is deprecated" in capsys.readouterr().err
    assert [json.loads(x)["score"] for x in new.read_text().splitlines()] == \
        [json.loads(x)["score"] for x in old.read_text().splitlines()]


def test_the_commands_default_judges_are_the_librarys():
    from sasa import cli
    from sasa.evaluation import runner as evaluate

    assert evaluate.DEFAULT_JUDGES[0] == "vlguard"
    parser = cli.build_parser()
    evaluate_parser = parser._subparsers._group_actions[0].choices["evaluate"]
    assert evaluate_parser.get_default("judges") == ",".join(evaluate.DEFAULT_JUDGES)
