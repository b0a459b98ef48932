"""Guard modes, probe fitting on a tiny model, streaming output and resume."""

import json

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria

from conftest import tiny_adapter
from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.guard.generation import DEFAULT_REFUSAL, Guard, engine_from_probe
from sasa.engine.layers import LayerSelection
from sasa.detector.probe import LinearProbe, ProbeMismatchError
from sasa.detector.fit import fit_probe, stratified_split

HARMFUL = ["zorp the vault now", "zorp a bank quickly", "how to zorp the lock", "zorp zorp the safe",
           "teach me to zorp doors", "zorp every car", "best way to zorp", "zorp the neighbours"]
BENIGN = ["bake a loaf of bread", "water the garden", "tidy the kitchen", "read a short book",
          "paint the fence blue", "walk the dog at noon", "write a thank you note", "plan a picnic"]


def _samples():
    return ([Sample(f"h{i}", p, label="harmful", source="toy") for i, p in enumerate(HARMFUL)]
            + [Sample(f"b{i}", p, label="benign", source="toy") for i, p in enumerate(BENIGN)])


@pytest.fixture(scope="module")
def fitted():
    adapter = tiny_adapter("llama")
    engine = SASAEngine(adapter, LayerSelection(2, 4))
    probe, report = fit_probe(engine, _samples(), target_fpr=0.25, val_fraction=0.25, progress=False,
                              model_name="tiny-llama")
    return adapter, probe, report


def test_fit_probe_records_everything_needed(fitted):
    adapter, probe, report = fitted
    meta = probe.metadata
    assert meta["model"]["fingerprint"] == adapter.fingerprint()
    assert meta["engine"]["layers"] == {"safety": 2, "fused": 4, "indexing": "0-based"}
    assert meta["engine"]["features"]["kind"] == "logits"
    assert report["val_fpr"] <= 0.25
    assert report["train_accuracy"] > 0.9  # 12 points in 300-d logit space are separable
    eng = engine_from_probe(adapter, probe)
    assert (eng.s, eng.f) == (2, 4)


def test_split_is_deterministic_stratified_and_disjoint():
    samples = _samples()
    a = stratified_split(samples, 0.25, seed=3)
    assert a == stratified_split(samples, 0.25, seed=3)
    train, val = a
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(samples)))
    assert sum(samples[i].label == "harmful" for i in val) == 2


def _probe_flagging(adapter, first_prompt_flagged: bool):
    """A probe over logits whose threshold sits between the scores of two prompts."""
    eng = SASAEngine(adapter, LayerSelection(2, 4))
    feats = eng.prefill(eng.encode(["zorp the vault now", "bake a loaf of bread"])).features.numpy()
    probe = LinearProbe.fit(feats, np.array([1.0, 0.0]) if first_prompt_flagged else np.array([0.0, 1.0]),
                            metadata={"model": {"name": "t", "fingerprint": adapter.fingerprint()},
                                      "engine": {"layers": eng.selection.to_dict(),
                                                 "projection": eng.projection.to_dict(),
                                                 "features": eng.features.to_dict()}})
    s = probe.decision_function(feats)
    probe.threshold = float(s.mean())
    return probe


def test_detect_refuses_flagged_and_answers_others_like_vanilla():
    adapter = tiny_adapter("llama")
    probe = _probe_flagging(adapter, True)
    prompts = ["zorp the vault now", "bake a loaf of bread"]
    guarded = Guard(adapter, "detect", probe).generate(prompts, max_new_tokens=6)
    vanilla = Guard(adapter, "vanilla").generate(prompts, max_new_tokens=6)
    assert [g.refused for g in guarded] == [True, False]
    assert guarded[0].text == DEFAULT_REFUSAL and guarded[0].n_new_tokens == 0
    assert guarded[1].text == vanilla[1].text and guarded[1].n_new_tokens == vanilla[1].n_new_tokens
    assert guarded[0].score > probe.threshold > guarded[1].score


def test_each_prompt_gets_its_own_latency():
    """A refusal's latency ends at the decision and an answer's at its last token, so rows of one
    batch differ (a batch's time divided among its rows would give every row the same)."""
    adapter = tiny_adapter("llama")
    prompts = ["zorp the vault now", "bake a loaf of bread"]
    guarded = Guard(adapter, "detect", _probe_flagging(adapter, True)).generate(prompts, max_new_tokens=6)
    assert guarded[0].refused and not guarded[1].refused
    assert 0 < guarded[0].latency_s < guarded[1].latency_s
    start = adapter.build_inputs(prompts)["input_ids"].shape[1]

    class StopRowZeroAfterTwo(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([input_ids.shape[1] >= start + 2, False], device=input_ids.device)

    early = Guard(adapter, "vanilla").generate(prompts, max_new_tokens=6,
                                               stopping_criteria=[StopRowZeroAfterTwo()])
    assert [g.n_new_tokens for g in early] == [2, 6]
    assert 0 < early[0].latency_s < early[1].latency_s


def test_vanilla_mode_is_plain_generate():
    adapter = tiny_adapter("qwen2")
    g = Guard(adapter, "vanilla").generate(["hello there"], max_new_tokens=5)[0]
    inputs = adapter.build_inputs(["hello there"])
    with torch.inference_mode():
        plain = adapter.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expect = adapter.tokenizer.decode(plain[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert g.text == expect and not g.refused and g.score is None


def test_augment_modes_run_and_differ_from_vanilla():
    adapter = tiny_adapter("llava")
    probe = _probe_flagging(adapter, False)
    prompts = ["zorp the vault now", "bake a loaf of bread"]
    aug = Guard(adapter, "augment", probe).generate(prompts, max_new_tokens=6)
    both = Guard(adapter, "augment+detect", probe).generate(prompts, max_new_tokens=6)
    van = Guard(adapter, "vanilla").generate(prompts, max_new_tokens=6)
    assert [o.refused for o in both] == [False, True]
    assert both[0].text == aug[0].text
    assert any(a.text != v.text for a, v in zip(aug, van))


def test_guard_needs_a_matching_probe():
    adapter = tiny_adapter("llama")
    with pytest.raises(ValueError, match="needs a probe"):
        Guard(adapter, "detect")
    with pytest.raises(ValueError, match="mode"):
        Guard(adapter, "block")
    probe = _probe_flagging(tiny_adapter("qwen2"), True)
    with pytest.raises(ProbeMismatchError, match="model_type"):
        Guard(adapter, "detect", probe)


def test_streaming_run_resumes_without_duplicates(tmp_path):
    adapter = tiny_adapter("llama")
    guard = Guard(adapter, "detect", _probe_flagging(adapter, True))
    samples = _samples()[:6]
    out = tmp_path / "out.jsonl"
    guard.run(samples[:3], out, batch_size=2, max_new_tokens=3, progress=False)
    with out.open("a") as fh:  # a crash mid-line
        fh.write('{"id": "h3", "te')
    guard.run(samples, out, batch_size=2, max_new_tokens=3, progress=False)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [s.id for s in samples]
    rec = json.loads(out.read_text().splitlines()[0])
    assert {"id", "response", "decision", "score", "mode", "latency_s", "label", "n_new_tokens"} <= set(rec)
    assert rec["decision"] == "refuse" and rec["refused"] is None  # the guard decides; no judge ran


def test_on_error_skip_records_the_bad_sample_and_spoils_nothing(tmp_path):
    """An unreadable image in a batch: with ``skip`` it becomes an error record naming it, and the
    batch's other samples get exactly the answers they get without it; by default the run stops."""
    from sasa.engine.samples import SampleError, encode_samples
    from sasa.testing.tiny_models import tiny_image

    adapter = tiny_adapter("llava")
    good = tmp_path / "good.png"
    tiny_image().save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    samples = [Sample("a", "describe it", image=str(good)), Sample("b", "and this", image=str(bad)),
               Sample("c", "bake bread", image=str(good))]
    guard = Guard(adapter, "vanilla")
    with pytest.raises(SampleError, match="'b'"):
        guard.run(samples, tmp_path / "stop.jsonl", batch_size=3, max_new_tokens=3, progress=False)
    out = guard.run(samples, tmp_path / "skip.jsonl", batch_size=3, max_new_tokens=3, progress=False,
                    on_error="skip")
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["b"]["decision"] == "error" and "bad.png" in recs["b"]["error"] and recs["b"]["response"] == ""
    for s in (samples[0], samples[2]):  # the failed batch reran one sample at a time
        assert recs[s.id]["response"] == guard.generate_inputs(encode_samples(guard.engine, [s]), 3)[0].text
    guard.run(samples, out, batch_size=3, max_new_tokens=3, progress=False, on_error="skip")
    assert len(out.read_text().splitlines()) == 3  # a rerun neither retries nor duplicates


def test_project_decoding_option():
    adapter = tiny_adapter("llama")
    with pytest.raises(ValueError, match="augment modes"):
        Guard(adapter, "vanilla", project_decoding=True)
    prompts = ["zorp the vault now", "bake a loaf of bread"]
    eng = SASAEngine(adapter, LayerSelection(2, 4))
    out = Guard(adapter, "augment", engine=eng, project_decoding=True).generate(prompts, max_new_tokens=5)
    direct = eng.generate(eng.encode(prompts), augment=True, project_decoding=True, max_new_tokens=5)
    assert [o.text for o in out] == direct.texts


def test_guard_from_pretrained_equals_the_hand_built_guard(fitted, tmp_path):
    adapter, probe, _ = fitted
    probe.save_pretrained(tmp_path / "probe")
    loaded = Guard.from_pretrained(adapter, tmp_path / "probe")
    by_hand = Guard(adapter, "detect", probe)
    prompts = HARMFUL[:2] + BENIGN[:2]
    np.testing.assert_allclose(loaded.score(prompts), by_hand.score(prompts), rtol=1e-5, atol=1e-6)
    assert (loaded.engine.s, loaded.engine.f) == (2, 4)
    with pytest.raises(ProbeMismatchError):
        Guard.from_pretrained(tiny_adapter("qwen2"), tmp_path / "probe")


def test_top_level_api_is_lazy_and_complete():
    import subprocess
    import sys

    import sasa

    for name in sasa.__all__:
        assert getattr(sasa, name) is not None
    assert sasa.Guard is Guard and sasa.LayerSelection is LayerSelection
    with pytest.raises(AttributeError):
        sasa.not_a_name  # noqa: B018
    code = "import sys, sasa; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_retry_errors_reruns_the_samples_that_failed_and_only_those(tmp_path):
    from sasa.testing.tiny_models import tiny_image

    adapter = tiny_adapter("llava")
    img = tmp_path / "img.png"
    img.write_bytes(b"not a png yet")
    samples = [Sample("a", "describe it", image=str(img)), Sample("b", "bake bread")]
    guard = Guard(adapter, "vanilla")
    out = guard.run(samples, tmp_path / "r.jsonl", batch_size=2, max_new_tokens=3, progress=False, on_error="skip")
    first = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert first["a"]["decision"] == "error"
    tiny_image().save(img)  # the user fixes the image
    guard.run(samples, out, batch_size=2, max_new_tokens=3, progress=False, on_error="skip", retry_errors=True)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["b", "a"] and recs[0] == first["b"]  # b kept as it was, a rerun
    assert recs[1]["decision"] == "answer"


def test_a_detector_fitted_on_text_warns_in_front_of_a_vision_model(caplog):
    adapter = tiny_adapter("llava")
    samples = ([Sample(f"h{i}", p, label="harmful") for i, p in enumerate(HARMFUL)]
               + [Sample(f"b{i}", p, label="benign") for i, p in enumerate(BENIGN)])
    with caplog.at_level("WARNING"):
        probe, _ = fit_probe(SASAEngine(adapter, LayerSelection(2, 4)), samples, target_fpr=0.25, progress=False)
    assert probe.metadata["data"]["n_with_image"] == 0
    assert "fitted on text prompts only" in caplog.text
