import json

import numpy as np
import pytest
import torch

from sasa import metrics as M
from sasa.detector.probe import LinearProbe, ProbeFileError, ProbeMismatchError, threshold_at_fpr

FP = {"model_type": "llama", "architecture": "LlamaForCausalLM", "num_layers": 6, "hidden_size": 64,
      "vocab_size": 300}


def _data(n=200, d=10, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    x = rng.normal(size=(n, d))
    x[:, 0] += sep * (2 * y - 1)
    return x, y


def test_fit_separates_and_agrees_with_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _data()
    probe = LinearProbe.fit(x, y, standardize=False, class_weight=None, l2=1e-2)
    acc = np.mean((probe.decision_function(x) > 0) == (y > 0.5))
    assert acc > 0.95
    ref = sklearn.LogisticRegression(C=1.0 / (1e-2 * len(y)), tol=1e-10, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(probe.weight.numpy(), ref.coef_[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(probe.bias, ref.intercept_[0], rtol=1e-3, atol=1e-3)


def test_standardisation_and_balanced_weights_run_and_separate():
    x, y = _data(sep=2.0)
    x[:, 1] *= 1000.0
    keep = np.concatenate([np.where(y == 1)[0][:20], np.where(y == 0)[0]])
    probe = LinearProbe.fit(x[keep], y[keep], standardize=True, class_weight="balanced")
    assert probe.mean is not None and probe.std is not None
    scores = probe.decision_function(x[keep])
    assert scores[y[keep] == 1].mean() > scores[y[keep] == 0].mean() + 1.0


def test_threshold_at_target_fpr():
    benign = np.arange(100, dtype=float)  # 0..99
    t = threshold_at_fpr(benign, 0.05)
    assert np.mean(benign > t) == 0.05
    assert threshold_at_fpr(benign, 0.0) == 99.0
    assert np.mean(benign > threshold_at_fpr(benign, 1.0)) == 0.99  # all but the lowest: nothing is above it
    rng = np.random.default_rng(0)
    for target in (0.01, 0.05, 0.2):
        scores = rng.normal(size=257).round(1)  # ties
        assert np.mean(scores > threshold_at_fpr(scores, target)) <= target
        assert threshold_at_fpr(scores, target) == M.threshold_for_fpr(scores, target, rule=">")
    ties = np.array([1.0, 1.0, 1.0, 0.0])
    t = threshold_at_fpr(ties, 0.5)
    assert np.mean(ties > t) <= 0.5
    with pytest.raises(ValueError):
        threshold_at_fpr([], 0.05)


def test_bad_fit_inputs():
    x, y = _data(n=20)
    with pytest.raises(ValueError, match="both"):
        LinearProbe.fit(x, np.zeros(20))
    with pytest.raises(ValueError, match="labels"):
        LinearProbe.fit(x[:10], y)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LinearProbe.fit(x, y)


ENGINE = {"layers": {"safety": 1, "fused": 4, "indexing": "0-based"},
          "projection": {"mode": "replace", "alpha": 1.0, "eps": 1e-6, "positions": "all"},
          "features": {"kind": "logits", "projected": True, "layer": None}}


def _fitted(x, y, **extra):
    probe = LinearProbe.fit(x, y, metadata={"model": {"name": "tiny", "fingerprint": FP}, "engine": ENGINE,
                                            "data": {"n_train": 150, "n_val": 50, "seed": 0,
                                                     "sources": ["sasa-paper"]}, **extra})
    probe.calibrate(x[y == 0], 0.05)
    return probe


def test_detector_directory_round_trip(tmp_path):
    x, y = _data()
    probe = _fitted(x, y, note="kept")
    out = probe.save_pretrained(tmp_path / "det")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "probe.safetensors"]
    again = LinearProbe.from_pretrained(out, expect_fingerprint=FP)
    np.testing.assert_allclose(again.decision_function(x), probe.decision_function(x), rtol=1e-5, atol=1e-5)
    assert again.threshold == pytest.approx(probe.threshold)
    cfg = again.config
    assert (cfg.layers.safety, cfg.layers.fused) == (1, 4) and cfg.features.projected and cfg.target_fpr == 0.05
    assert cfg.n_calibration == 100 and cfg.model_name == "tiny" and cfg.extra == {"note": "kept"}
    raw = json.loads((out / "config.json").read_text())
    assert raw["format"] == "sasa-detector" and raw["versions"]["torch"] == torch.__version__
    assert raw["layers"] == ENGINE["layers"] and raw["model_fingerprint"] == FP
    card = (out / "README.md").read_text()
    assert "s=1, f=4" in card and "5.0% FPR on 100" in card and "sasa-paper" in card and "Guard.from_pretrained" in card
    assert again.save_pretrained(out) == out  # a detector directory may be replaced by another


def test_save_refuses_to_replace_a_folder_that_is_not_a_detector(tmp_path):
    x, y = _data()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    with pytest.raises(ProbeFileError, match="not a sasa detector directory"):
        _fitted(x, y).save_pretrained(tmp_path / "work")
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"


def test_refuses_other_model(tmp_path):
    x, y = _data()
    _fitted(x, y).save_pretrained(tmp_path / "p")
    other = dict(FP, num_layers=30, vocab_size=49152)
    with pytest.raises(ProbeMismatchError, match="num_layers"):
        LinearProbe.from_pretrained(tmp_path / "p", expect_fingerprint=other)


def test_corrupt_files_give_clear_errors(tmp_path):
    x, y = _data()
    det = _fitted(x, y).save_pretrained(tmp_path / "p")
    (det / "probe.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ProbeFileError, match="probe.safetensors"):
        LinearProbe.from_pretrained(det)
    det = _fitted(x, y).save_pretrained(tmp_path / "q")
    (det / "config.json").write_text("{not json")
    with pytest.raises(ProbeFileError, match="config.json"):
        LinearProbe.from_pretrained(det)
    det = _fitted(x, y).save_pretrained(tmp_path / "r")
    raw = json.loads((det / "config.json").read_text())
    (det / "config.json").write_text(json.dumps({**raw, "layers": {"safety": 1}}))
    with pytest.raises(ProbeFileError, match="invalid detector config"):
        LinearProbe.from_pretrained(det)
    (det / "config.json").write_text(json.dumps({**raw, "dim": 11}))
    with pytest.raises(ProbeFileError, match="dim 11"):
        LinearProbe.from_pretrained(det)
    with pytest.raises(ProbeFileError, match="not found"):
        LinearProbe.from_pretrained(tmp_path / "absent")
    (tmp_path / "old.json").write_text("{}")  # the two-file layout of unreleased versions is not read
    with pytest.raises(ProbeFileError, match="not a detector directory"):
        LinearProbe.from_pretrained(tmp_path / "old.json")


def test_dimension_mismatch_on_scoring():
    x, y = _data()
    probe = LinearProbe.fit(x, y)
    with pytest.raises(ProbeMismatchError, match="expects 10"):
        probe.decision_function(np.zeros((2, 11)))


def test_probe_and_profile_share_one_artefact_form(tmp_path):
    """Both are written with ``save_pretrained`` into a directory, read with ``from_pretrained``,
    stamped with the library versions, and refused for another model with the same error base."""
    from sasa.analysis.profile import ModelProfile
    from sasa.store.artefact import ArtefactMismatchError, ModelArtefact, library_versions

    x, y = _data()
    probe = _fitted(x, y)
    probe.metadata["model"] = {"name": "m", "fingerprint": FP}
    profile = ModelProfile(fingerprint=FP, safety=1, fused=3, model="m")
    other = dict(FP, num_layers=FP["num_layers"] + 1)
    for artefact, folder in ((probe, tmp_path / "probe"), (profile, tmp_path / "profile")):
        assert isinstance(artefact, ModelArtefact)
        artefact.save_pretrained(folder)
        assert folder.is_dir()
        again = type(artefact).from_pretrained(folder, expect_fingerprint=FP)
        assert again.made_for() == ("m", FP)
        with pytest.raises(ArtefactMismatchError, match="num_layers"):
            type(artefact).from_pretrained(folder, expect_fingerprint=other)
    assert json.loads((tmp_path / "profile" / "profile.json").read_text())["versions"] == library_versions()
    stamped = json.loads((tmp_path / "probe" / "config.json").read_text())["versions"]
    assert stamped["sasa"] == library_versions()["sasa"]
    with pytest.warns(DeprecationWarning, match="from_pretrained"):
        assert ModelProfile.load(tmp_path / "profile").fused == 3
