"""Metrics against hand-computed values (ties included) and against scikit-learn on random data."""

import math

import numpy as np
import pytest

from sasa import metrics as M


# --- rates -----------------------------------------------------------------------------------------


def test_attack_success_rate_from_refusals_and_from_unsafe_flags():
    assert M.attack_success_rate([True, False, False, False]) == pytest.approx(0.75)
    assert M.attack_success_rate(unsafe=[True, False, False, True]) == pytest.approx(0.5)
    assert M.attack_success_rate(np.array([1, 1, 0, 1])) == pytest.approx(0.25)


def test_attack_success_rate_rejects_ambiguous_or_unparsed_input():
    with pytest.raises(ValueError, match="exactly one"):
        M.attack_success_rate([True], unsafe=[True])
    with pytest.raises(ValueError, match="exactly one"):
        M.attack_success_rate()
    with pytest.raises(ValueError, match="1 of 3 unsafe flags are None"):
        M.attack_success_rate(unsafe=[True, None, False])
    with pytest.raises(ValueError, match="no samples"):
        M.attack_success_rate([])


def test_over_refusal_rate():
    assert M.over_refusal_rate([True, False, False, False]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="0/1"):
        M.over_refusal_rate([0, 2, 1])


# --- AUROC / AP / ROC -----------------------------------------------------------------------------


def test_auroc_hand_computed_with_a_tie():
    # pairs (pos, neg): (.8,.5)=1 (.8,.2)=1 (.5,.5)=1/2 (.5,.2)=1 -> 3.5/4
    assert M.auroc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]) == pytest.approx(0.875)


def test_auroc_all_tied_is_chance_and_extremes():
    assert M.auroc([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert M.auroc([1, 1, 0], [3.0, 2.0, 1.0]) == pytest.approx(1.0)
    assert M.auroc([0, 0, 1], [3.0, 2.0, 1.0]) == pytest.approx(0.0)


def test_auroc_handles_tied_infinities():
    # pos inf ties neg inf (1/2) and beats neg 0 (1) -> 0.75
    assert M.auroc([1, 0, 0], [np.inf, np.inf, 0.0]) == pytest.approx(0.75)


def test_average_precision_hand_computed():
    # steps at .8 (P=1, R=.5) and at the tie .5 (P=2/3, R=1)
    assert M.average_precision([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # neg .9, pos .8 (P=.5, R=.5), neg .3, pos .1 (P=.5, R=1)
    assert M.auprc([0, 1, 0, 1], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.5)


def test_roc_curve_points_group_ties():
    fpr, tpr, thr = M.roc_curve([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], [0.8, 0.5, 0.2])


@pytest.mark.parametrize("metric", [M.auroc, M.average_precision, M.roc_curve])
def test_single_class_raises_naming_the_metric(metric):
    with pytest.raises(ValueError, match=metric.__name__) as exc:
        metric([1, 1, 1], [0.1, 0.2, 0.3])
    assert "single class" in str(exc.value)
    with pytest.raises(ValueError, match="benign"):
        metric([0, 0], [0.1, 0.2])


def test_nan_scores_raise_clearly():
    with pytest.raises(ValueError, match=r"auroc: scores contain 1 NaN value\(s\) \(first at index 2\)"):
        M.auroc([1, 0, 1], [0.2, 0.1, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        M.tpr_at_fpr([1, 0], [np.nan, 0.1], 0.05)
    with pytest.raises(ValueError, match="NaN"):
        M.threshold_for_fpr([0.1, np.nan], 0.05)


def test_length_and_label_validation():
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        M.auroc([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        M.auroc([1, 0, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        M.auroc(["harmful", "benign"], [0.1, 0.2])


# --- operating points ---------------------------------------------------------------------------------


POS = [0.9, 0.7, 0.55, 0.4]
NEG = [0.6, 0.5, 0.3, 0.2, 0.1]
Y = [1] * len(POS) + [0] * len(NEG)
S = POS + NEG


@pytest.mark.parametrize(
    "target, tpr, threshold, fpr",
    [
        (0.0, 0.5, 0.7, 0.0),  # only .9 and .7 clear every benign score
        (0.2, 0.75, 0.55, 0.2),  # one benign (.6) allowed
        (0.39, 0.75, 0.55, 0.2),  # .4 would flag a second benign: FPR .4 > .39
        (0.4, 1.0, 0.4, 0.4),
        (1.0, 1.0, 0.4, 0.4),  # highest threshold among equal-TPR points
    ],
)
def test_operating_point_hand_computed(target, tpr, threshold, fpr):
    op = M.operating_point_at_fpr(Y, S, target)
    assert op.tpr == pytest.approx(tpr)
    assert op.threshold == pytest.approx(threshold)
    assert op.fpr == pytest.approx(fpr)
    assert M.tpr_at_fpr(Y, S, target) == pytest.approx(tpr)


@pytest.mark.parametrize(
    "target, threshold",
    [(0.0, 0.6), (0.2, 0.5), (0.4, 0.3), (1.0, 0.3)],  # next distinct score below the '>=' threshold
)
def test_operating_point_strict_rule_hand_computed(target, threshold):
    op = M.operating_point_at_fpr(Y, S, target, rule=">")
    assert op.threshold == pytest.approx(threshold)
    assert op.tpr == pytest.approx(M.tpr_at_fpr(Y, S, target))


def test_operating_point_strict_rule_edges():
    # full recall needs flagging the lowest score too: only -inf does that under '>'
    assert M.operating_point_at_fpr([0, 1], [0.9, 0.1], 1.0, rule=">").threshold == -np.inf
    # "flag nothing" under '>' is the top score
    assert M.operating_point_at_fpr([0, 1], [0.9, 0.1], 0.0, rule=">").threshold == pytest.approx(0.9)
    with pytest.raises(ValueError, match="rule"):
        M.operating_point_at_fpr([1, 0], [0.9, 0.1], 0.1, rule="=>")


@pytest.mark.parametrize("rule", [">=", ">"])
def test_operating_point_threshold_reproduces_its_rates_on_random_data(rule):
    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + y, 1)
    for target in (0.0, 0.01, 0.05, 0.3):
        op = M.operating_point_at_fpr(y, s, target, rule=rule)
        flagged = s >= op.threshold if rule == ">=" else s > op.threshold
        assert flagged[~y].mean() == pytest.approx(op.fpr) and op.fpr <= target
        assert flagged[y].mean() == pytest.approx(op.tpr)
        out = M.binary_metrics(y, s, op.threshold, rule=rule)
        assert out["recall"] == pytest.approx(op.tpr)


def test_tpr_at_fpr_tie_at_the_boundary_moves_together():
    # the harmful .5 is tied with a benign .5: at FPR 0 it cannot be flagged alone
    assert M.tpr_at_fpr([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], 0.0) == pytest.approx(0.5)
    assert M.tpr_at_fpr([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], 0.5) == pytest.approx(1.0)


def test_tpr_at_fpr_rejects_bad_target():
    with pytest.raises(ValueError, match="target_fpr"):
        M.tpr_at_fpr(Y, S, 1.5)


BENIGN_10 = [round(0.1 * i, 1) for i in range(1, 11)]


@pytest.mark.parametrize(
    "scores, target, expected",
    [
        (BENIGN_10, 0.1, 1.0),
        (BENIGN_10, 0.2, 0.9),
        (BENIGN_10, 1.0, 0.1),
        ([0.1, 0.5, 0.5, 0.9], 0.25, 0.9),
        ([0.1, 0.5, 0.5, 0.9], 0.75, 0.5),  # ties: .5 flags both .5s and .9
    ],
)
def test_threshold_for_fpr_hand_computed(scores, target, expected):
    assert M.threshold_for_fpr(scores, target) == pytest.approx(expected)


@pytest.mark.parametrize(
    "scores, target, expected",
    [
        (BENIGN_10, 0.1, 0.9),  # flags only 1.0
        (BENIGN_10, 0.05, 1.0),  # flags nothing
        ([0.1, 0.5, 0.5, 0.9], 0.25, 0.5),
        ([0.1, 0.5, 0.5, 0.9], 0.75, 0.1),
    ],
)
def test_threshold_for_fpr_strict_rule_hand_computed(scores, target, expected):
    t = M.threshold_for_fpr(scores, target, rule=">")
    assert t == pytest.approx(expected)
    assert np.mean(np.asarray(scores) > t) <= target


@pytest.mark.parametrize("scores, target", [(BENIGN_10, 0.05), ([0.1, 0.5, 0.5, 0.9], 0.2), ([0.3, 0.3], 0.4)])
def test_threshold_for_fpr_above_every_benign_score_when_budget_too_small(scores, target):
    t = M.threshold_for_fpr(scores, target)
    assert t > max(scores)
    assert t == np.nextafter(max(scores), np.inf)


def test_threshold_for_fpr_respects_budget_and_is_minimal_on_random_data():
    rng = np.random.default_rng(3)
    for target in (0.01, 0.05, 0.1, 0.33):
        s = np.round(rng.normal(size=257), 1)  # many ties
        t = M.threshold_for_fpr(s, target)
        assert np.mean(s >= t) <= target
        lower = s[s < t]
        if lower.size:  # the next observed score down would exceed the budget
            assert np.mean(s >= lower.max()) > target


# --- thresholded classification ----------------------------------------------------------------------


def test_binary_metrics_hand_computed():
    out = M.binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1], 0.5)
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 1, 1, 1)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)


def test_binary_metrics_threshold_is_inclusive_and_undefined_precision_is_nan():
    assert M.binary_metrics([1, 0], [0.5, 0.1], 0.5)["tp"] == 1
    out = M.binary_metrics([1, 0], [0.4, 0.1], 0.9)
    assert math.isnan(out["precision"])
    assert out["recall"] == 0.0 and out["f1"] == 0.0


# --- latency -------------------------------------------------------------------------------------------


def test_latency_stats():
    lat = [1.0, 2.0, 3.0, 4.0]
    assert M.mean_latency(lat) == pytest.approx(2.5)
    assert M.percentile_latency(lat, 50) == pytest.approx(2.5)
    assert M.percentile_latency(lat, 25) == pytest.approx(1.75)
    summ = M.latency_summary(lat, percentiles=(50, 100))
    assert summ == {"n": 4, "mean": 2.5, "p50": 2.5, "p100": 4.0}
    with pytest.raises(ValueError, match="non-negative"):
        M.mean_latency([1.0, -0.1])
    with pytest.raises(ValueError, match="no latencies"):
        M.mean_latency([])


# --- scikit-learn cross-checks ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auroc_and_average_precision_match_sklearn_with_ties(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + y * 0.8, 1)  # rounding creates many ties
    assert M.auroc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_tpr_at_fpr_matches_best_sklearn_roc_point(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.4
    s = np.round(rng.normal(size=400) + y * 1.2, 2)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    for target in (0.01, 0.05, 0.2):
        assert M.tpr_at_fpr(y, s, target) == pytest.approx(tpr[fpr <= target].max(), abs=1e-12)
    ours_fpr, ours_tpr, _ = M.roc_curve(y, s)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)


# --- bootstrap -----------------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_point():
    rng = np.random.default_rng(0)
    x = rng.random(400) < 0.3
    a = M.bootstrap_ci(np.mean, x, n_boot=300, seed=7)
    b = M.bootstrap_ci(np.mean, x, n_boot=300, seed=7)
    c = M.bootstrap_ci(np.mean, x, n_boot=300, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low <= a.value <= a.high
    assert a.value == pytest.approx(x.mean())


def test_bootstrap_width_matches_binomial_standard_error():
    x = np.r_[np.ones(120), np.zeros(280)]  # p = .3, n = 400
    ci = M.bootstrap_ci(np.mean, x, n_boot=1000, seed=1)
    normal_width = 2 * 1.96 * math.sqrt(0.3 * 0.7 / 400)  # ~0.090
    assert ci.high - ci.low == pytest.approx(normal_width, rel=0.2)
    narrow = M.bootstrap_ci(np.mean, x, n_boot=1000, seed=1, level=0.5)
    assert narrow.high - narrow.low < ci.high - ci.low


def test_bootstrap_resamples_arrays_jointly():
    a = np.arange(50)
    # if rows were resampled independently per array, a == b would almost never hold
    ci = M.bootstrap_ci(lambda u, v: float(np.mean(u == v)), a, a.copy(), n_boot=50, seed=0)
    assert (ci.low, ci.high) == (1.0, 1.0)


def test_stratified_bootstrap_keeps_class_sizes_and_never_loses_a_class():
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.5, 0.2, 0.1])
    count = M.bootstrap_ci(lambda yy: float(yy.sum()), y, n_boot=100, seed=0, stratify=y)
    assert (count.low, count.high) == (2.0, 2.0)
    ci = M.bootstrap_ci(M.auroc, y, s, n_boot=200, seed=0, stratify=y)
    assert ci.n_failed == 0 and 0.0 <= ci.low <= ci.value <= ci.high <= 1.0
    with pytest.raises(ValueError, match="stratify"):
        M.bootstrap_ci(M.auroc, y, s, n_boot=200, seed=0)  # unstratified: single-class resamples


def test_bootstrap_input_errors():
    with pytest.raises(ValueError, match="differ in length"):
        M.bootstrap_ci(lambda a, b: 0.0, [1, 2], [1])
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(np.mean, [1.0], n_boot=0)


# --- breakdowns ---------------------------------------------------------------------------------------------


def test_per_group_hand_computed():
    keys = ["a", "a", "b", "b", "b"]
    refused = [True, False, True, True, False]
    out = M.per_group(lambda r: M.attack_success_rate(r), keys, refused)
    assert list(out) == ["a", "b"]
    assert out["a"] == pytest.approx(0.5)
    assert out["b"] == pytest.approx(1 / 3)


def test_per_group_single_class_group():
    keys = ["x", "x", "y", "y"]
    y = [1, 0, 1, 1]
    s = [0.9, 0.1, 0.5, 0.6]
    with pytest.raises(ValueError, match="auroc"):
        M.per_group(M.auroc, keys, y, s)
    out = M.per_group(M.auroc, keys, y, s, on_error="nan")
    assert out["x"] == 1.0 and math.isnan(out["y"])
