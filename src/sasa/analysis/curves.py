"""Per-layer analysis metrics, as pure functions of cached activations and logit-lens read-outs.

Every function here takes arrays (no model), so each can be checked on constructed activations with
a known answer. Shapes: ``states`` is ``[n, L, d]`` (last prompt token, output of every decoder
block, 0-based block ``i`` = ``hidden_states[i + 1]``); lens read-outs are ``[n, L]`` or
``[n, L, k]``. Each curve is a length-``L`` list, one value per block.

* :func:`probe_curve` - safety perception: cross-validated linear-probe AUROC, accuracy and
  held-out separation d' for harmful vs benign, per block.
* :func:`category_curve` - semantic understanding: cross-validated linear-probe accuracy for the
  samples' categories (topics), per block, with the majority-class chance level.

The probes are closed-form ridge classifiers (:func:`ridge_fit`): a probe per block and fold costs
milliseconds and is exactly reproducible, which an iterative logistic fit is not at ``n < d``.
* :func:`crossmodal_curve` - semantic understanding across modalities: cosine between the state
  of an image carrying a text and the state of the same text given as text, against mismatched
  pairs (the margin is what is selected on: raw cosines of transformer states are all high).
* :func:`readability_curve` - logit lens: share of a block's top-k tokens that are readable words.
* :func:`refusal_curve` - alignment for linguistic expression: logit-lens probability and rank of
  refusal tokens on harmful vs benign inputs, and the block where refusal wording emerges.
* :func:`principal_angle` - head importance: the angle between the leading singular directions
  of two state matrices (used by :mod:`sasa.analysis.heads`).

Cross-validation folds are deterministic (seeded) and group-aware: samples sharing
``meta["group"]`` (variants of one question) always fall in the same fold, so a probe is never
tested on a paraphrase or rendering of something it was trained on.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from sasa.metrics import auroc

logger = logging.getLogger(__name__)


def _check_states(states: Any, what: str = "states") -> np.ndarray:
    x = np.asarray(states)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)     # float32 caches stay float32: per-block slices are promoted where fitted
    if x.ndim != 3:
        raise ValueError(f"{what} must be [n, L, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    return x


def stratified_group_folds(labels: Sequence[Any], groups: Sequence[Any] | None, k: int, seed: int = 0) -> np.ndarray:
    """Fold index per sample: groups shuffled (seeded) and dealt round-robin within each label.

    A group's label is its first member's; all members of a group get the same fold. The deal is
    stratified, so with at least ``k`` groups per label every fold holds every label.
    """
    labels = list(labels)
    n = len(labels)
    groups = list(groups) if groups is not None else list(range(n))
    if len(groups) != n:
        raise ValueError(f"{n} labels but {len(groups)} groups")
    first_label: dict[Any, Any] = {}
    for g, y in zip(groups, labels):
        first_label.setdefault(g, y)
    rng = np.random.default_rng(seed)
    fold_of: dict[Any, int] = {}
    for y in sorted({repr(v) for v in first_label.values()}):
        gs = [g for g, lab in first_label.items() if repr(lab) == y]
        order = rng.permutation(len(gs))
        for pos, i in enumerate(order):
            fold_of[gs[i]] = pos % k
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def _n_folds(counts: Sequence[int], folds: int, what: str) -> int:
    k = min(folds, min(counts))
    if k < 2:
        raise ValueError(f"{what}: cross-validation needs at least 2 groups of every class, got class sizes "
                         f"{list(counts)}")
    return k


Ridge = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def ridge_fit(x: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None, reg: float = 0.1) -> Ridge:
    """Standardised, (weighted) ridge regression onto ``targets [n, c]``, in closed form.

    Closed form keeps a probe per block and fold at milliseconds (an iterative logistic fit on
    ``n < d`` separable data runs to its iteration cap) and makes it exactly reproducible. The
    penalty is ``reg`` times the mean squared row norm (about ``reg * d`` after standardising), so
    its strength does not depend on width. With ``n <= d`` the dual (``n x n``) system is solved.
    Returns (mean, std, coef [d, c], intercept [c]).
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n = x.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = x.mean(0)
    std = np.maximum(x.std(0), 1e-6)
    z = (x - mean) / std
    zm = (w[:, None] * z).sum(0) / w.sum()
    tm = (w[:, None] * t).sum(0) / w.sum()
    sw = np.sqrt(w)[:, None]
    zc, tc = sw * (z - zm), sw * (t - tm)
    lam = reg * float((zc * zc).sum()) / n + 1e-12
    if n <= z.shape[1]:
        coef = zc.T @ np.linalg.solve(zc @ zc.T + lam * np.eye(n), tc)
    else:
        coef = np.linalg.solve(zc.T @ zc + lam * np.eye(z.shape[1]), zc.T @ tc)
    return mean, std, coef, tm - zm @ coef


def ridge_predict(model: Ridge, x: np.ndarray) -> np.ndarray:
    """Scores ``[n, c]`` of a :func:`ridge_fit` model."""
    mean, std, coef, intercept = model
    return ((np.asarray(x, dtype=np.float64) - mean) / std) @ coef + intercept


def dprime(scores: np.ndarray, y: np.ndarray) -> float:
    """(mean harmful - mean benign) / pooled standard deviation of held-out scores."""
    a, b = scores[y > 0.5], scores[y <= 0.5]
    pooled = math.sqrt((a.var() + b.var()) / 2)
    return float((a.mean() - b.mean()) / max(pooled, 1e-12))


def probe_curve(
    states: Any,
    labels: Any,
    *,
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    seed: int = 0,
    reg: float = 0.1,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cross-validated harmful-vs-benign linear-probe separability at each block.

    labels: 1 = harmful, 0 = benign. Per fold a class-balanced ridge probe (:func:`ridge_fit`,
    targets +1 / -1) is fitted on the other folds and scores this one. Per block:

    * ``auroc``: mean of the per-fold AUROCs (``auroc_std`` their spread);
    * ``accuracy``: out-of-fold accuracy at the probe's own boundary (score 0);
    * ``dprime``: separation of the pooled out-of-fold scores, (mean harmful - mean benign) /
      pooled std. AUROC and accuracy saturate at 1 as soon as the classes are separable at all
      (on lexically distinct prompts that is block 0); d' keeps measuring *how far* apart the
      held-out classes are, so its peak is a location. This is what the selection rule reads.

    Blocks not in ``layers`` get NaN.
    """
    from tqdm.auto import tqdm

    x = _check_states(states)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    n, L, _ = x.shape
    if y.shape[0] != n:
        raise ValueError(f"{n} samples but {y.shape[0]} labels")
    if not set(np.unique(y).tolist()) <= {0.0, 1.0}:
        raise ValueError("probe labels must be 0 (benign) or 1 (harmful)")
    grp = list(groups) if groups is not None else list(range(n))
    n_groups = [len({g for g, v in zip(grp, y) if v == c}) for c in (0.0, 1.0)]
    k = _n_folds(n_groups, folds, "safety probe")
    fold = stratified_group_folds(y.tolist(), grp, k, seed)
    target = np.where(y > 0.5, 1.0, -1.0)[:, None]
    out: dict[str, Any] = {key: [math.nan] * L for key in ("auroc", "auroc_std", "accuracy", "dprime")}
    todo = range(L) if layers is None else layers
    for layer in tqdm(list(todo), desc="safety probe", unit="block", disable=not progress):
        scores = np.zeros(n)
        aucs = []
        for f in range(k):
            test = fold == f
            ytr = y[~test]
            n_pos = ytr.sum()
            wts = np.where(ytr > 0.5, len(ytr) / (2 * n_pos), len(ytr) / (2 * (len(ytr) - n_pos)))
            model = ridge_fit(x[~test, layer], target[~test], wts, reg)
            scores[test] = ridge_predict(model, x[test, layer])[:, 0]
            if 0 < y[test].sum() < test.sum():
                aucs.append(auroc(y[test], scores[test]))
        out["auroc"][layer] = float(np.mean(aucs)) if aucs else math.nan
        out["auroc_std"][layer] = float(np.std(aucs)) if aucs else math.nan
        out["accuracy"][layer] = float(np.mean((scores > 0) == (y > 0.5)))
        out["dprime"][layer] = dprime(scores, y)
    out["folds"] = k
    return out


def category_curve(
    states: Any,
    categories: Sequence[Any],
    *,
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    seed: int = 0,
    reg: float = 0.1,
    min_per_class: int = 2,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cross-validated topic/category probe accuracy at each block (one-vs-rest ridge, argmax).

    Categories with fewer than ``min_per_class`` groups are left out (they cannot be both trained
    and tested on); at least two categories must remain. ``chance`` is the majority-class share of
    the samples used, the accuracy a probe reaches by knowing nothing.
    """
    from tqdm.auto import tqdm

    x = _check_states(states)
    n, L, _ = x.shape
    if len(categories) != n:
        raise ValueError(f"{n} samples but {len(categories)} categories")
    grp = list(groups) if groups is not None else list(range(n))
    group_count: dict[Any, set] = {}
    for c, g in zip(categories, grp):
        if c is not None:
            group_count.setdefault(c, set()).add(g)
    kept = sorted(c for c, gs in group_count.items() if len(gs) >= min_per_class)
    if len(kept) < 2:
        raise ValueError(f"category probe needs at least 2 categories with {min_per_class}+ samples each; "
                         f"got {({c: len(g) for c, g in group_count.items()})}")
    idx = np.array([i for i, c in enumerate(categories) if c in kept])
    cls = {c: j for j, c in enumerate(kept)}
    y = np.array([cls[categories[i]] for i in idx])
    g_kept = [grp[i] for i in idx]
    k = _n_folds([len(group_count[c]) for c in kept], folds, "category probe")
    fold = stratified_group_folds(y.tolist(), g_kept, k, seed)
    counts = np.bincount(y, minlength=len(kept))
    onehot = np.where(np.eye(len(kept))[y] > 0, 1.0, -1.0)
    acc = [math.nan] * L
    todo = range(L) if layers is None else layers
    for layer in tqdm(list(todo), desc="category probe", unit="block", disable=not progress):
        xl = x[idx, layer]
        pred = np.zeros(len(idx), dtype=np.int64)
        for f in range(k):
            test = fold == f
            model = ridge_fit(xl[~test], onehot[~test], reg=reg)
            pred[test] = ridge_predict(model, xl[test]).argmax(-1)
        acc[layer] = float(np.mean(pred == y))
    return {"accuracy": acc, "chance": float(counts.max() / counts.sum()), "categories": kept,
            "n": int(len(idx)), "folds": k}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def crossmodal_curve(states: Any, pairs: Sequence[tuple[int, int]]) -> dict[str, list[float]]:
    """Agreement between image and text renderings of the same content, at each block.

    pairs: (row of the image sample, row of the text sample) carrying the same content.
    ``cosine``: mean cosine of matched pairs; ``cosine_mismatched``: mean cosine of each image
    state with the text states of the *other* pairs; ``agreement`` = their difference (a
    retrieval margin). Anisotropy (every state sharing a large common direction) lifts both
    cosines alike, so only ``agreement`` says the model represents *this* content the same way
    whether it arrived as pixels or as tokens.
    """
    x = _check_states(states)
    if len(pairs) < 2:
        raise ValueError("cross-modal agreement needs at least 2 image/text pairs (one to compare against)")
    img = np.array([i for i, _ in pairs])
    txt = np.array([j for _, j in pairs])
    a, b = _unit(x[img]), _unit(x[txt])           # [p, L, d]
    sims = np.einsum("pld,qld->lpq", a, b)         # [L, p, p]
    p = len(pairs)
    diag = np.einsum("lpp->lp", sims)
    matched = diag.mean(-1)
    mismatched = (sims.sum((-1, -2)) - diag.sum(-1)) / (p * (p - 1))
    return {"cosine": matched.tolist(), "cosine_mismatched": mismatched.tolist(),
            "agreement": (matched - mismatched).tolist()}


def readability_curve(top_ids: Any, readable: Any) -> list[float]:
    """Share of readable tokens among each block's logit-lens top-k, averaged over samples.

    top_ids: ``[n, L, k]`` token ids; readable: boolean ``[V]`` mask (see
    :func:`sasa.analysis.lens.readable_token_mask` for what counts as readable).
    """
    ids = np.asarray(top_ids)
    mask = np.asarray(readable, dtype=bool)
    if ids.ndim != 3:
        raise ValueError(f"top_ids must be [n, L, k], got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= mask.shape[0]):
        raise ValueError(f"token ids out of range for a vocabulary of {mask.shape[0]}")
    return mask[ids].mean(axis=(0, 2)).astype(np.float64).tolist()


def refusal_curve(prob: Any, rank: Any, harmful: Any, *, emergence_fraction: float = 0.5) -> dict[str, Any]:
    """Where refusal wording emerges: logit-lens refusal-token probability and rank per block.

    prob: ``[n, L]`` total probability of the refusal tokens; rank: ``[n, L]`` 1-based rank of the
    best refusal token; harmful: boolean ``[n]``. Returns per-block means of the probability on
    harmful and on benign inputs, their ``gap``, the median best rank on each, and ``emergence``:
    the first block where the gap reaches ``emergence_fraction`` of its maximum (None when harmful
    inputs never raise refusal tokens above benign ones).
    """
    p = np.asarray(prob, dtype=np.float64)
    r = np.asarray(rank, dtype=np.float64)
    h = np.asarray(harmful, dtype=bool).reshape(-1)
    if p.ndim != 2 or p.shape != r.shape or p.shape[0] != h.shape[0]:
        raise ValueError(f"prob {p.shape} and rank {r.shape} must be [n, L] with n = {h.shape[0]} samples")
    if not h.any():
        raise ValueError("refusal curve needs harmful samples")
    out: dict[str, Any] = {
        "prob_harmful": p[h].mean(0).tolist(),
        "rank_harmful": np.median(r[h], axis=0).tolist(),
        "prob_benign": p[~h].mean(0).tolist() if (~h).any() else [math.nan] * p.shape[1],
        "rank_benign": np.median(r[~h], axis=0).tolist() if (~h).any() else [math.nan] * p.shape[1],
    }
    gap = p[h].mean(0) - (p[~h].mean(0) if (~h).any() else 0.0)
    out["gap"] = np.asarray(gap, dtype=np.float64).tolist()
    top = float(np.max(gap))
    out["emergence"] = int(np.argmax(gap >= emergence_fraction * top)) if top > 0 else None
    return out


def leading_direction(h: Any) -> np.ndarray:
    """Unit leading right singular vector of ``[n, d]`` (sign is arbitrary; use absolute cosines)."""
    m = np.asarray(h, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1:
        raise ValueError(f"need a non-empty [n, d] matrix, got shape {m.shape}")
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    return vt[0]


def principal_angle(a: Any, b: Any) -> float:
    """Angle in degrees between the leading singular directions of two ``[n, d]`` state matrices.

    Ships-style head importance (Zhou et al. 2024): the rows are final-block last-token states of
    the same prompts with and without an ablation; 0 means the ablation left the dominant
    direction of the representation unchanged.
    """
    u, v = leading_direction(a), leading_direction(b)
    c = min(1.0, abs(float(u @ v)))
    return math.degrees(math.acos(c))
