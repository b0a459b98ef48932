"""Layer analysis (issue 5): each metric on constructed activations with a planted answer, the selection
rule on synthetic curves, the activation cache (exactness, resume after a crash), head ablation on a
tiny model with planted heads, end to end on tiny models (API and CLI, --profile) and on SmolLM2."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_adapter
from sasa.analysis import AnalysisConfig, ModelProfile, ProfileMismatchError, SelectionRule, run_analysis
from sasa.analysis import activations as A
from sasa.analysis import curves as M
from sasa.analysis.heads import ablate_head, head_importance, head_layout
from sasa.analysis.lens import lens_readout, readable_token_mask, refusal_token_ids
from sasa.analysis.select import SelectionError, select_layers
from sasa.data.sample import Sample, write_manifest

HARM = ["zorp the vault", "zorp a bank", "how to zorp locks", "zorp the safe", "zorp all doors", "zorp cars",
        "zorp the gate", "zorp a shop"]
SAFE = ["bake bread", "water plants", "tidy a room", "read a book", "paint a fence", "walk the dog",
        "write a note", "plan a picnic"]


def _samples():
    return ([Sample(f"h{i}", p, label="harmful", category="crime" if i % 2 else "zorp") for i, p in enumerate(HARM)]
            + [Sample(f"b{i}", p, label="benign", category="home" if i % 2 else "hobby") for i, p in enumerate(SAFE)])


def _strict_json(path):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=bad)


# --- metrics on constructed activations ------------------------------------------------------------


def test_probe_curve_peaks_at_the_planted_layer():
    rng = np.random.default_rng(0)
    n, L, d, k = 40, 6, 16, 3
    y = np.array([1.0] * 20 + [0.0] * 20)
    x = rng.normal(size=(n, L, d))
    x[:, k, 0] += 2.5 * (2 * y - 1)          # harmful vs benign separable along e0 at block 3 only
    curve = M.probe_curve(x, y)
    assert int(np.argmax(curve["dprime"])) == k and int(np.argmax(curve["auroc"])) == k
    assert curve["auroc"][k] > 0.95 and curve["accuracy"][k] > 0.9
    assert max(v for i, v in enumerate(curve["auroc"]) if i != k) < 0.8
    assert M.probe_curve(x, y) == curve      # deterministic


def test_folds_keep_groups_together_and_every_fold_has_both_labels():
    labels = [1] * 10 + [0] * 10
    groups = [f"g{i // 2}" for i in range(20)]     # pairs of variants
    fold = M.stratified_group_folds(labels, groups, 5, seed=1)
    for g in set(groups):
        assert len({fold[i] for i in range(20) if groups[i] == g}) == 1
    for f in range(5):
        assert {labels[i] for i in range(20) if fold[i] == f} == {0, 1}
    with pytest.raises(ValueError, match="at least 2 groups"):
        M.probe_curve(np.zeros((3, 2, 4)), [1, 0, 0])


def test_category_curve_rises_where_topics_become_linear():
    rng = np.random.default_rng(1)
    n, L, d = 36, 6, 12
    cats = [["a", "b", "c"][i % 3] for i in range(n)]
    x = rng.normal(size=(n, L, d))
    for i, c in enumerate(cats):
        x[i, 4:, "abc".index(c)] += 5.0          # topics separable from block 4 on
    cur = M.category_curve(x, cats)
    assert cur["chance"] == pytest.approx(1 / 3) and cur["categories"] == ["a", "b", "c"]
    assert min(cur["accuracy"][4:]) > 0.9 and max(cur["accuracy"][:4]) < 0.7


def test_crossmodal_agreement_appears_where_pairs_share_meaning():
    rng = np.random.default_rng(2)
    p, L, d, k = 8, 6, 32, 3
    x = rng.normal(size=(2 * p, L, d))
    x += 3.0 * rng.normal(size=(1, L, d))               # a common direction: raw cosines are high everywhere
    meaning = rng.normal(size=(p, d)) * 4.0
    x[:p, k:] += meaning[:, None]                       # image rows 0..p-1 and text rows p..2p-1 agree from block 3
    x[p:, k:] += meaning[:, None]
    cur = M.crossmodal_curve(x, [(i, p + i) for i in range(p)])
    assert min(cur["cosine"]) > 0.5                     # the anisotropy the margin removes
    assert max(cur["agreement"][:k]) < 0.1 and min(cur["agreement"][k:]) > 0.3
    assert int(np.argmax(np.array(cur["agreement"]) > 0.3)) == k


def test_readability_curve_counts_readable_top_tokens():
    readable = np.array([True, False] * 50)             # even ids readable
    top = np.zeros((4, 3, 10), dtype=int)
    top[:, 0] = np.arange(1, 20, 2)                     # all odd: 0 %
    top[:, 1, :5] = 2                                    # half even: 50 %
    top[:, 1, 5:] = 3
    top[:, 2] = np.arange(0, 20, 2)                     # all even: 100 %
    assert M.readability_curve(top, readable) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="out of range"):
        M.readability_curve(top + 100, readable)


def test_refusal_curve_finds_where_refusal_wording_emerges():
    n, L = 10, 8
    harmful = np.array([True] * 5 + [False] * 5)
    prob = np.full((n, L), 0.01)
    prob[:5, 5:] = 0.6                                   # harmful prompts' lens says "sorry" from block 5
    prob[:5, 4] = 0.2                                    # a first rise below half the final gap
    rank = np.where(prob > 0.5, 1, 100)
    cur = M.refusal_curve(prob, rank, harmful)
    assert cur["emergence"] == 5
    assert cur["rank_harmful"][6] == 1 and cur["rank_benign"][6] == 100
    assert cur["gap"][0] == pytest.approx(0.0) and cur["gap"][7] == pytest.approx(0.59)
    assert M.refusal_curve(np.full((n, L), 0.1), rank, harmful)["emergence"] is None


def test_principal_angle_of_a_known_rotation():
    rng = np.random.default_rng(3)
    d = 10
    u = np.eye(d)[0]
    v = np.cos(np.radians(30)) * np.eye(d)[0] + np.sin(np.radians(30)) * np.eye(d)[1]
    coef = rng.uniform(1, 2, size=(6, 1))
    assert M.principal_angle(coef * u, coef * v) == pytest.approx(30.0, abs=1e-6)
    assert M.principal_angle(coef * u, -3 * coef * u) == pytest.approx(0.0, abs=1e-6)   # sign and scale free


class _Tok:
    """A toy tokenizer: greedy longest match over a small vocabulary."""

    vocab = ["<s>", " sorry", "Sorry", "sor", "ry", "un", "able", " unable", "I", "'m", " I", "can", "'t", " can",
             "12", "ab", "x"]
    all_special_ids = [0]
    added_tokens_decoder = {}

    def __len__(self):
        return len(self.vocab)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)

    def encode(self, text, add_special_tokens=False):
        out = []
        while text:
            best = max((i for i, t in enumerate(self.vocab) if i and text.startswith(t)),
                       key=lambda i: len(self.vocab[i]))
            out.append(best)
            text = text[len(self.vocab[best]):]
        return out


def test_readable_tokens_and_refusal_tokens_follow_their_definitions():
    tok = _Tok()
    mask = readable_token_mask(tok, 20)
    readable = {tok.vocab[i] for i in range(len(tok)) if mask[i]}
    assert readable == {" sorry", "Sorry", "sor", "ry", "un", "able", " unable", " can", "can", "ab"}
    assert not mask[len(tok):].any()                     # padded embedding rows
    ids = refusal_token_ids(tok, ["sorry", "unable", "I'm", "can't"])
    # whole words or pieces ending at a word boundary; never the fragments "sor" (of sorry) or "un" (of unable)
    assert {tok.vocab[i] for i in ids} == {" sorry", " unable", "I", " I", "can", " can"}


# --- selection rule on synthetic curves ------------------------------------------------------------


def _sigmoid(L, mid, scale=1.0):
    return [1 / (1 + math.exp(-(i - mid) / scale)) for i in range(L)]


def test_selection_rule_on_synthetic_curves():
    L = 20
    dp = [1.0] * L
    dp[1] = 20.0                      # lexical separability at block 1: outside the default band
    dp[7], dp[9], dp[12] = 9.8, 10.0, 9.0
    sem = _sigmoid(L, 11)
    sel = select_layers({"probe_dprime": dp, "category_accuracy": sem}, L)
    assert (sel.safety, sel.fused) == (7, 14)         # sigmoid(14 - 11) = 0.95 is the first >= 90 % of the rise
    assert "block 7 is the earliest within 5%" in sel.reason and "category-probe accuracy" in sel.reason
    assert sel.details["safety_range"] == [5, 14]
    # tolerance 0: the peak itself
    assert select_layers({"probe_dprime": dp, "category_accuracy": sem}, L,
                         rule=SelectionRule(safety_tolerance=0.0)).safety == 9
    # a wider band lets block 1 win
    assert select_layers({"probe_dprime": dp}, L, rule=SelectionRule(safety_band=(0.0, 1.0))).safety == 1
    # lower saturation: an earlier f
    assert select_layers({"probe_dprime": dp, "category_accuracy": sem}, L,
                         rule=SelectionRule(saturation=0.5)).fused < sel.fused
    # the semantic preference order: cross-modal first when measured
    cm = _sigmoid(L, 8)
    both = select_layers({"probe_dprime": dp, "crossmodal_agreement": cm, "category_accuracy": sem}, L)
    assert both.details["fused_metric"] == "crossmodal_agreement" and both.fused < sel.fused
    # max_gap caps f - s
    assert select_layers({"probe_dprime": dp, "category_accuracy": sem}, L, rule=SelectionRule(max_gap=2)).fused == 9


def test_selection_restricted_to_safety_head_layers():
    L = 20
    dp = [1.0] * L
    dp[7], dp[9], dp[12] = 9.8, 10.0, 9.0
    heads = {"ranked": [{"layer": 1, "head": 0, "specific": 9.0},       # outside the search range: not a candidate
                        {"layer": 12, "head": 3, "specific": 5.0}, {"layer": 9, "head": 0, "specific": 2.0},
                        {"layer": 7, "head": 1, "specific": -1.0}]}     # block 7's head is utility, not safety
    sel = select_layers({"probe_dprime": dp}, L, heads=heads)
    assert sel.safety == 9 and sel.details["safety_candidates"] == [9, 12]
    assert "(block.head: 12.3, 9.0)" in sel.reason and "only 2 of its 3 ablated heads" in sel.reason
    assert select_layers({"probe_dprime": dp}, L, heads=heads, rule=SelectionRule(top_heads=1)).safety == 12
    assert select_layers({"probe_dprime": dp}, L, heads=heads, rule=SelectionRule(use_heads=False)).safety == 7
    none_positive = {"ranked": [{"layer": 9, "head": 0, "specific": -2.0}]}
    sel2 = select_layers({"probe_dprime": dp}, L, heads=none_positive)
    assert sel2.safety == 7 and "every block was a candidate" in sel2.reason


def test_selection_fallbacks_and_errors():
    L = 32
    dp = _sigmoid(L, 12, 0.5)
    sel = select_layers({"probe_dprime": dp, "crossmodal_agreement": None}, L)
    assert sel.fused == sel.safety + 2 and "no usable semantic curve" in sel.reason
    flat = select_layers({"probe_dprime": dp, "readability": [0.3] * L}, L)
    assert flat.fused == flat.safety + 2 and "flat" in flat.reason
    with pytest.raises(SelectionError, match="has 3 values"):
        select_layers({"probe_dprime": [1, 2, 3]}, L)
    with pytest.raises(SelectionError, match="no probe_dprime curve"):
        select_layers({"probe_auroc": dp}, L)
    with pytest.raises(ValueError, match="safety_metric"):
        SelectionRule(safety_metric="vibes")


# --- activations: exactness and resume ---------------------------------------------------------------


def test_activations_equal_hidden_states_and_resume_after_a_crash(tmp_path, monkeypatch):
    adapter = tiny_adapter("llama")
    samples = _samples()[:5] + _samples()[8:11]
    full = A.collect_activations(adapter, samples, tmp_path / "full", batch_size=3, progress=False)
    assert full.shape == (8, adapter.num_layers, 64)
    for i in (0, 6):                                   # one by one, the model's own hidden_states
        inputs = adapter.encode([samples[i].prompt])
        with torch.inference_mode():
            hs = adapter.model(**inputs, output_hidden_states=True).hidden_states
        for k in range(adapter.num_layers - 1):
            torch.testing.assert_close(torch.from_numpy(full[i, k]), hs[k + 1][0, -1], atol=1e-4, rtol=1e-4)
        # HF's last hidden state is taken after the final norm; the cache keeps the block's own output
        with torch.inference_mode():
            normed = adapter.final_norm(torch.from_numpy(full[i, -1]))
        torch.testing.assert_close(normed, hs[-1][0, -1], atol=1e-4, rtol=1e-4)

    class Killed(Exception):
        pass

    original_add = A.ActivationCache.add
    calls = {"n": 0}

    def add_then_die(self, *a, **k):
        original_add(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Killed

    monkeypatch.setattr(A.ActivationCache, "add", add_then_die)
    with pytest.raises(Killed):
        A.collect_activations(adapter, samples, tmp_path / "run", batch_size=3, progress=False)
    monkeypatch.setattr(A.ActivationCache, "add", original_add)
    (tmp_path / "run" / "shard-00042.safetensors").write_bytes(b"torn")     # an orphan left by a crash
    computed = []
    real = A.last_token_states
    monkeypatch.setattr(A, "last_token_states", lambda eng, chunk, *a: computed.extend(s.id for s in chunk)
                        or real(eng, chunk, *a))
    resumed = A.collect_activations(adapter, samples, tmp_path / "run", batch_size=3, progress=False)
    assert computed == [s.id for s in samples[3:]]      # only what the crash lost
    assert not (tmp_path / "run" / "shard-00042.safetensors").exists()
    np.testing.assert_allclose(resumed, full, atol=1e-5)
    computed.clear()
    edited = [Sample("h0", "zorp the vault now", label="harmful")] + samples[1:]
    A.collect_activations(adapter, edited, tmp_path / "run", batch_size=3, progress=False)
    assert computed == ["h0"]                            # an edited prompt is recomputed, not served stale
    with pytest.raises(A.ActivationCacheError, match="num_layers: cache 6 vs model 7"):
        A.ActivationCache(tmp_path / "run", dict(adapter.fingerprint(), num_layers=7))
    from sasa.models.adapters import get_adapter
    from sasa.testing.tiny_models import build_tiny

    other = get_adapter(*build_tiny("llama", seed=1))  # other weights, same architecture: refused, not served
    assert other.fingerprint() == adapter.fingerprint()
    with pytest.raises(A.ActivationCacheError, match="weights: cache"):
        A.collect_activations(other, samples, tmp_path / "run", batch_size=3, progress=False)


def test_logit_lens_of_the_last_block_is_the_models_own_head(tmp_path):
    adapter = tiny_adapter("qwen2")
    samples = _samples()[:3]
    states = A.collect_activations(adapter, samples, tmp_path, progress=False)
    lens = lens_readout(adapter, states, [5, 6], top_k=3, progress=False)
    for i, s in enumerate(samples):
        with torch.inference_mode():
            logits = adapter.model(**adapter.encode([s.prompt])).logits[0, -1]
        assert lens.top_ids[i, -1, 0] == int(logits.argmax())
        p = torch.softmax(logits.float(), -1)[[5, 6]].sum()
        assert lens.refusal_prob[i, -1] == pytest.approx(float(p), rel=1e-4)
        assert lens.refusal_rank[i, -1] == int((logits > logits[[5, 6]].max()).sum()) + 1


# --- head ablation -------------------------------------------------------------------------------


def test_head_ablation_finds_a_planted_head_and_ignores_a_dead_one(tmp_path, monkeypatch):
    from sasa.models.adapters import get_adapter
    from sasa.testing.tiny_models import build_tiny

    adapter = get_adapter(*build_tiny("llama", seed=0))       # a private copy: its weights are edited
    n_heads, hd = head_layout(adapter)
    assert (n_heads, hd) == (4, 16)
    with torch.no_grad():
        adapter.layers[3].self_attn.o_proj.weight[:, 1 * hd:2 * hd] *= 40.0   # block 3 head 1 dominates
        adapter.layers[1].self_attn.o_proj.weight[:, 2 * hd:3 * hd] = 0.0     # block 1 head 2 writes nothing
    samples = _samples()
    inputs = adapter.encode([s.prompt for s in samples[:2]])
    with torch.inference_mode():
        before = adapter.model(**inputs).logits
        with ablate_head(adapter, 3, 1):
            ablated = adapter.model(**inputs).logits
        after = adapter.model(**inputs).logits
    assert not torch.allclose(before, ablated) and torch.equal(before, after)   # the hook is gone afterwards
    res = head_importance(adapter, samples, layers=[1, 3], max_samples=4, batch_size=8, progress=False,
                          records_path=tmp_path / "heads.jsonl")
    a_s, a_u = np.array(res["angle_safety"]), np.array(res["angle_utility"])
    assert np.isnan(a_s[0]).all() and np.isfinite(a_s[[1, 3]]).all()
    assert a_s[1, 2] == pytest.approx(0.0, abs=1e-3) and a_u[1, 2] == pytest.approx(0.0, abs=1e-3)
    top = max((a_s[x, h] + a_u[x, h], x, h) for x in (1, 3) for h in range(4))
    assert top[1:] == (3, 1)
    assert res["ranked"][0]["specific"] >= res["ranked"][-1]["specific"]
    # resume: every head is on disk, nothing is ablated again
    import sasa.analysis.heads as H
    monkeypatch.setattr(H, "ablate_head", lambda *a: pytest.fail("ablated again"))
    again = head_importance(adapter, samples, layers=[1, 3], max_samples=4, batch_size=8, progress=False,
                            records_path=tmp_path / "heads.jsonl")
    np.testing.assert_allclose(np.array(again["angle_safety"]), a_s, equal_nan=True)


# --- end to end -----------------------------------------------------------------------------------


def test_sample_cap_takes_whole_groups_and_pairs_are_found_by_group():
    from sasa.analysis.run import find_pairs
    from sasa.data.splits import subsample

    def cap_samples(samples, cap, seed):
        return subsample(samples, per_label=cap, seed=seed, whole_groups=True)

    samples = [Sample(f"{lab}{i}-{v}", "p", image="x.png" if v == "img" else None, label=lab,
                      meta={"group": f"{lab}{i}"}) for lab in ("harmful", "benign") for i in range(6)
               for v in ("txt", "img")]
    capped = cap_samples(samples, 4, seed=0)
    assert sum(s.label == "harmful" for s in capped) == 4 and sum(s.label == "benign" for s in capped) == 4
    assert cap_samples(samples, 4, seed=0) == capped
    assert len({s.meta['group'] for s in capped}) == 4  # whole groups: 4 pairs, not 8 halves
    pairs = find_pairs(capped)
    assert len(pairs) == 4
    for i, j in pairs:
        assert capped[i].image and not capped[j].image and capped[i].meta["group"] == capped[j].meta["group"]


def test_end_to_end_on_a_tiny_lvlm_with_rendered_pairs(tmp_path):
    adapter = tiny_adapter("llava")
    cfg = AnalysisConfig(pairs=6, head_layers=(1, 2, 3), head_max_samples=4, progress=False)
    res = run_analysis(adapter, _samples(), tmp_path, cfg, model_name="tiny-llava")
    s, f = res["selection"]["safety"], res["selection"]["fused"]
    assert 0 <= s < f < adapter.num_layers
    assert res["curves"]["semantic"]["crossmodal"]["n_pairs"] == 6 and res["data"]["rendered images"] == 6
    assert res["selection"]["details"]["fused_metric"] == "crossmodal_agreement"
    for name in ("profile.json", "curves.json", "analysis.html", "heads.jsonl", "pairs/manifest.jsonl",
                 "activations/index.json"):
        assert (tmp_path / name).is_file(), name
    curves = _strict_json(tmp_path / "curves.json")
    assert curves["selection"]["safety"] == s and len(curves["curves"]["safety"]["dprime"]) == adapter.num_layers
    for name in ("safety_probe", "safety_dprime", "heads", "semantic", "crossmodal", "refusal", "refusal_rank"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as img:
            assert img.size == (720, 420)
        assert (tmp_path / "plots" / f"{name}.svg").read_text().startswith("<svg")
    page = (tmp_path / "analysis.html").read_text()
    assert page.count("<svg") == 7 and f"Recommended (s, f) = ({s}, {f})" in page and "nan" not in page.lower()
    prof = ModelProfile.from_pretrained(tmp_path, expect_fingerprint=adapter.fingerprint())
    assert (prof.safety, prof.fused) == (s, f) and prof.selection().resolve(adapter.num_layers) == (s, f)
    assert prof.reason == res["selection"]["reason"]
    shards = sorted(p.name for p in (tmp_path / "activations").iterdir())
    again = run_analysis(adapter, _samples(), tmp_path, cfg, model_name="tiny-llava")     # resumes: no new work
    assert sorted(p.name for p in (tmp_path / "activations").iterdir()) == shards
    assert (again["selection"]["safety"], again["selection"]["fused"]) == (s, f)


def test_cli_analyze_then_profile_drives_probe_fit(tmp_path, caplog, capsys):
    from sasa.cli import main
    from sasa.detector.probe import LinearProbe
    from sasa.testing.tiny_models import save_tiny

    model_dir = save_tiny("llama", tmp_path / "model")
    data = write_manifest(_samples(), tmp_path / "data.jsonl")
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(model_dir), "--device", "cpu", "--data", str(data), "--out", str(out),
                 "--head-layers", "2,3", "--head-heads", "0,1", "--head-max-samples", "4", "--pair-map",
                 "--pair-map-step", "2"]) == 0
    prof = ModelProfile.from_pretrained(out / "profile.json")
    assert "Maximum" in capsys.readouterr().out  # the map's one-line reading
    pm = json.loads((out / "curves.json").read_text())["pair_map"]
    assert pm["depths"] == [0, 2, 4, 5] and pm["analysis_pick"] == {"s": prof.safety, "f": prof.fused}
    assert "The (s, f) map" in (out / "analysis.html").read_text()
    assert prof.data["harmful"] == 8 and prof.data["benign"] == 8 and prof.model == str(model_dir)
    assert main(["probe", "fit", "--model", str(model_dir), "--device", "cpu", "--data", str(data),
                 "--profile", str(out), "--out", str(tmp_path / "probe")]) == 0
    layers = LinearProbe.from_pretrained(tmp_path / "probe").metadata["engine"]["layers"]
    assert (layers["safety"], layers["fused"]) == (prof.safety, prof.fused)
    assert main(["probe", "fit", "--model", str(model_dir), "--device", "cpu", "--data", str(data), "--layers", "1",
                 "5", "--profile", str(out), "--out", str(tmp_path / "probe15")]) == 0      # --layers wins
    layers = LinearProbe.from_pretrained(tmp_path / "probe15").metadata["engine"]["layers"]
    assert (layers["safety"], layers["fused"]) == (1, 5)
    assert main(["generate", "--model", str(model_dir), "--device", "cpu", "--mode", "augment", "--profile", str(out),
                 "--prompt", "bake bread", "--max-new-tokens", "2"]) == 0
    # a profile made for another model is refused, naming what differs
    other = json.loads((out / "profile.json").read_text())
    other["model"]["fingerprint"]["hidden_size"] = 4096
    (tmp_path / "other.json").write_text(json.dumps(other))
    with caplog.at_level("ERROR"):
        rc = main(["probe", "fit", "--model", str(model_dir), "--device", "cpu", "--data", str(data),
                   "--profile", str(tmp_path / "other.json"), "--out", str(tmp_path / "probe2")])
    assert rc == 1 and "hidden_size: profile 4096 vs model 64" in caplog.text
    with pytest.raises(ProfileMismatchError):
        ModelProfile.from_pretrained(tmp_path / "other.json", expect_fingerprint=prof.fingerprint | {"hidden_size": 64})


@pytest.mark.slow
def test_smollm2_end_to_end_on_text(tmp_path):
    from sasa.data import builtin_dataset
    from sasa.models.loading import load_model
    from sasa.models.smollm2 import gguf_path

    try:
        gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    adapter = load_model("smollm2-135m", device="cpu").adapter
    ds = builtin_dataset()
    harm = [s for s in ds if s.source == "harmbench"][:60:5]
    benign = [s for s in ds if s.source == "sasa-benign"][:240:20]
    assert len(harm) == 12 and len(benign) == 12
    cfg = AnalysisConfig(head_layers=(7, 11, 15), head_heads=(0, 2, 4, 6, 8), head_max_samples=4, progress=False)
    res = run_analysis(adapter, harm + benign, tmp_path, cfg, model_name="smollm2-135m")
    s, f = res["selection"]["safety"], res["selection"]["fused"]
    lo, hi = res["selection"]["details"]["safety_range"]
    assert (lo, hi) == (7, 22) and lo <= s <= hi and s < f < 30
    assert "cross-modal agreement skipped: llama is a text-only model" in res["notes"]
    assert max(res["curves"]["safety"]["auroc"]) > 0.9                  # HarmBench vs benign is separable
    sem = res["curves"]["semantic"]
    assert sem["readability"][-1] > sem["readability"][0]                # the lens reads words at the top
    assert " sorry" in res["curves"]["alignment"]["refusal_tokens"]
    for name in ("profile.json", "curves.json", "analysis.html", "plots/safety_dprime.png", "plots/heads.png"):
        assert (tmp_path / name).is_file(), name
    prof = ModelProfile.from_pretrained(tmp_path, expect_fingerprint=adapter.fingerprint())
    assert prof.selection().resolve(30) == (s, f)
    print(f"\nSmolLM2-135M: recommended (s, f) = ({s}, {f}); {prof.reason}")
