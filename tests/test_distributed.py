"""Data parallelism: two gloo processes under ``accelerate launch`` equal one process, and a killed
shard resumes with nothing lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sasa.data.sample import Sample, write_manifest
from sasa.distributed import Shard
from sasa.testing.tiny_models import save_tiny, tiny_image

HARM = ["zorp the vault", "zorp a bank", "how to zorp locks", "zorp the safe", "zorp all doors", "zorp cars",
        "zorp the gate", "zorp a shop", "zorp the till", "zorp a van", "zorp the lock", "zorp a flat"]
SAFE = ["bake bread", "water plants", "tidy a room", "read a book", "paint a fence", "walk the dog",
        "write a note", "plan a picnic", "fold laundry", "sweep the porch", "wash a car", "brew tea"]


def test_shards_deal_one_process_batches_round_robin():
    n, size = 23, 4
    one = Shard().batch_indices(n, size)
    assert one == [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    for world in (2, 3, 7):
        parts = [Shard(r, world).batch_indices(n, size) for r in range(world)]
        dealt = sorted((b for p in parts for b in p), key=lambda b: b[0])
        assert dealt == one  # every batch once, with exactly the samples it has in one process
        items = list(range(100, 100 + n))
        assert sorted(x for r in range(world) for x in Shard(r, world).items(items, size)) == items
    with pytest.raises(ValueError, match="rank 2"):
        Shard(2, 2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    model = save_tiny("llava", root / "model")
    samples = []
    for i, (h, b) in enumerate(zip(HARM, SAFE)):
        img = root / f"{i}.png"
        tiny_image(i).save(img)
        split = "train" if i < 4 else ("val" if i < 6 else "test")
        samples.append(Sample(f"h{i}", h, image=str(img), label="harmful", split=split))
        samples.append(Sample(f"b{i}", b, image=str(img) if i % 2 else None, label="benign", split=split))
    manifest = write_manifest(samples, root / "data.jsonl")
    return model, manifest


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(args: list[str], processes: int) -> list[str]:
    """``python ARGS`` in one process, or under ``accelerate launch`` in ``processes`` gloo processes."""
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--main_process_port", _free_port(), *args]


def _command(model, manifest, out, processes: int) -> list[str]:
    return _launch(["-m", "sasa", "evaluate", "--model", str(model), "--data", str(manifest), "--layers", "2,4",
                    "--modes", "vanilla,detect,probe-noproj", "--batch-size", "2", "--max-new-tokens", "6",
                    "--n-boot", "50", "--device", "cpu", "--out", str(out)], processes)


def _one_and_two(args: list[str], tmp_path) -> None:
    """Run ``args`` into tmp_path/one in one process and into tmp_path/two in two."""
    subprocess.run(_launch([*args, "--out", str(tmp_path / "one")], 1), check=True, env=_env(),
                   capture_output=True, timeout=600)
    run = subprocess.run(_launch([*args, "--out", str(tmp_path / "two")], 2), env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


def _records(out):
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("latency_s")
    return rows


def _summary(out):
    summary = json.loads((out / "summary.json").read_text())
    for m in summary["modes"].values():
        m.pop("latency_s", None)
        m.pop("latency", None)
    return summary


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    model, manifest = setup
    out = tmp_path_factory.mktemp("one")
    subprocess.run(_command(model, manifest, out, 1), check=True, env=_env(), capture_output=True, timeout=600)
    return out


def test_two_processes_equal_one(setup, one_process, tmp_path):
    model, manifest = setup
    out = tmp_path / "two"
    run = subprocess.run(_command(model, manifest, out, 2), env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _records(out) == _records(one_process)  # same records, same order, same scores and answers
    assert _summary(out) == _summary(one_process)
    assert not list(out.glob("records.shard-*"))  # merged, then removed
    assert run.stdout.count("report:") == 1  # only the main process reports


def test_a_killed_shard_resumes_with_nothing_lost_or_duplicated(setup, one_process, tmp_path):
    model, manifest = setup
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(model, manifest, out, 2), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    shard = out / "records.shard-1-of-2.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (shard.is_file() and shard.stat().st_size > 0):
        time.sleep(0.02)
    # the launcher's workers run in their own process groups: kill every process of this run
    subprocess.run(["pkill", "-KILL", "-f", str(out)], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while subprocess.run(["pgrep", "-f", str(out)], capture_output=True).returncode == 0:
        time.sleep(0.05)
    assert shard.is_file() and not (out / "records.jsonl").exists()  # killed mid-run, before the merge
    partial = shard.read_text().splitlines()
    assert partial
    with shard.open("a") as fh:  # as if killed in the middle of writing a line
        fh.write('{"id": "h6", "mode": "vani')
    run = subprocess.run(_command(model, manifest, out, 2), env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = _records(out)
    keys = [(r["mode"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == len(_records(one_process))
    by_key = {(r["mode"], r["id"]): r for r in records}
    done_before = [json.loads(line) for line in partial]
    for r in done_before:  # what the killed shard had finished was kept, not redone
        r.pop("latency_s")
        assert by_key[(r["mode"], r["id"])] == r
    assert sorted(keys) == sorted((r["mode"], r["id"]) for r in _records(one_process))


def test_probe_fit_in_two_processes_equals_one(setup, tmp_path):
    model, manifest = setup
    _one_and_two(["-m", "sasa", "probe", "fit", "--model", str(model), "--data", str(manifest), "--layers", "2,4",
                  "--batch-size", "3", "--device", "cpu"], tmp_path)
    from safetensors import safe_open

    def read(directory):
        with safe_open(str(directory / "probe.safetensors"), "pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            meta = fh.metadata()
        return tensors, meta, json.loads((directory / "config.json").read_text())

    (t1, m1, c1), (t2, m2, c2) = read(tmp_path / "one"), read(tmp_path / "two")
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)  # the very same probe
    c1.pop("saved_at"), c2.pop("saved_at")
    assert m1 == m2 and c1 == c2  # validation metrics and threshold included


def test_analyze_in_two_processes_equals_one(setup, tmp_path):
    model, manifest = setup
    _one_and_two(["-m", "sasa", "analyze", "--model", str(model), "--data", str(manifest), "--device", "cpu",
                  "--no-heads", "--folds", "2", "--batch-size", "3"], tmp_path)
    one, two = (json.loads((tmp_path / d / "profile.json").read_text()) for d in ("one", "two"))
    for p in (one, two):
        p.pop("created_at")
    assert one == two  # the same curves and the same (s, f)
    assert not list((tmp_path / "two" / "activations").glob("part-*"))  # the parts were absorbed
