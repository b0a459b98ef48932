"""The (s, f) map: every pair on a grid over all depths, each cell the probe recipe's validation AUROC."""

import numpy as np
import pytest

from conftest import tiny_adapter
from sasa.analysis.pairmap import PairMapConfig, grid_depths, pair_map, pair_map_svg, smoothed_pick
from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.engine.samples import extract_features
from sasa.engine.layers import LayerSelection
from sasa.metrics import auroc
from sasa.detector.probe import LinearProbe

HARM = ["zorp the vault", "zorp a bank", "how to zorp locks", "zorp the safe", "zorp all doors", "zorp cars",
        "zorp the gate", "zorp a shop"]
SAFE = ["bake bread", "water plants", "tidy a room", "read a book", "paint a fence", "walk the dog",
        "write a note", "plan a picnic"]


def test_the_grid_covers_every_depth_and_always_holds_the_last_block():
    assert grid_depths(30) == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert grid_depths(6, step=1) == [0, 1, 2, 3, 4, 5]
    assert grid_depths(6, step=2) == [0, 2, 4, 5]
    with pytest.raises(ValueError):
        grid_depths(1)


def test_the_smoothed_pick_prefers_a_high_neighbourhood_over_a_lone_peak():
    depths = [0, 1, 2, 3, 4]
    grid = [[0.5 if i < j else None for j in range(5)] for i in range(5)]
    grid[0][1] = 0.99  # a lone peak among 0.5s
    for i, j in ((1, 3), (1, 4), (2, 3), (2, 4)):
        grid[i][j] = 0.9  # a plateau
    grid[3][4] = 0.85
    s, f, value = smoothed_pick(depths, grid)
    assert (s, f) == (2, 4) and value == pytest.approx(np.mean([0.9, 0.9, 0.9, 0.9, 0.85]))


def test_the_map_on_a_tiny_model_matches_a_probe_fitted_pair_by_pair():
    adapter = tiny_adapter("llama")
    train = [Sample(f"h{i}", p, label="harmful") for i, p in enumerate(HARM[:5])] + \
        [Sample(f"b{i}", p, label="benign") for i, p in enumerate(SAFE[:5])]
    val = [Sample(f"vh{i}", p, label="harmful") for i, p in enumerate(HARM[5:])] + \
        [Sample(f"vb{i}", p, label="benign") for i, p in enumerate(SAFE[5:])]
    result = pair_map(adapter, train, val, PairMapConfig(step=2, batch_size=4, progress=False))
    assert result["depths"] == [0, 2, 4, 5] and result["n_train"] == 10 and result["n_val"] == 6
    cells = {(s, f): result["grid"][i][j] for i, s in enumerate(result["depths"])
             for j, f in enumerate(result["depths"]) if result["grid"][i][j] is not None}
    assert sorted(cells) == [(0, 2), (0, 4), (0, 5), (2, 4), (2, 5), (4, 5)]
    engine = SASAEngine(adapter, LayerSelection(2, 4))
    x, _ = extract_features(engine, train + val, batch_size=4, progress=False)
    y = np.array([s.label == "harmful" for s in train + val], dtype=float)
    probe = LinearProbe.fit(x[:10], y[:10], standardize=True, class_weight="balanced", l2=1e-2)
    assert cells[(2, 4)] == pytest.approx(auroc(y[10:], probe.decision_function(x[10:])), abs=1e-9)
    best = result["best"]
    assert cells[(best["s"], best["f"])] == max(cells.values()) == best["auroc"]
    assert 0.0 <= result["noproj_auroc"] <= 1.0
    svg = pair_map_svg(result, marks={"analysis' pick": (2, 4)})
    assert svg.startswith("<svg") and "analysis' pick" in svg
    assert svg.count("stroke-width=\"3\"") == 6  # three marks, each a cell outline and a legend box


def test_pick_stability_runs_the_analysis_per_seed_and_counts_agreement(tmp_path, capsys):
    import json

    from sasa.cli import main
    from sasa.data.sample import write_manifest
    from sasa.testing.tiny_models import save_tiny

    model_dir = save_tiny("llama", tmp_path / "model")
    samples = [Sample(f"h{i}", p, label="harmful") for i, p in enumerate(HARM)] + \
        [Sample(f"b{i}", p, label="benign") for i, p in enumerate(SAFE)]
    data = write_manifest(samples, tmp_path / "data.jsonl")
    out = tmp_path / "stability"
    assert main(["analyze", "--model", str(model_dir), "--device", "cpu", "--data", str(data), "--out", str(out),
                 "--no-heads", "--max-samples", "6", "--stability-seeds", "0,1,2", "--pair-map-step", "2"]) == 0
    result = json.loads((out / "stability.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1, 2]
    assert set(result["agreement"]) == {"analysis", "map_maximum", "map_smoothed_maximum"}
    for rule, a in result["agreement"].items():
        chosen = [tuple(r[rule]) for r in result["runs"]]
        assert a["of"] == 3 and a["agree"] == chosen.count(tuple(a["most_common"])) == max(map(chosen.count, chosen))
    drawn = [frozenset(json.loads((out / f"seed-{k}" / "activations" / "index.json").read_text())["samples"])
             for k in (0, 1, 2)]
    assert all(len(d) == 12 for d in drawn) and len(set(drawn)) > 1  # 6 per label, each seed its own draw
    printed = capsys.readouterr().out
    assert f"analysis: (s, f) = {tuple(result['agreement']['analysis']['most_common'])}" in printed
