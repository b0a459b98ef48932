"""Fit and calibrate a SASA probe for one model from labelled samples."""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import numpy as np

from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.features import extract_features
from sasa.probe import LinearProbe

logger = logging.getLogger(__name__)


def stratified_split(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic per-label split of sample indices into (train, validation)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1)")
    rng = random.Random(seed)
    train, val = [], []
    for label in ("harmful", "benign"):
        idx = [i for i, s in enumerate(samples) if s.label == label]
        rng.shuffle(idx)
        k = max(1, int(round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def fit_probe(
    engine: SASAEngine,
    samples: Sequence[Sample],
    *,
    target_fpr: float = 0.05,
    val_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 8,
    standardize: bool = True,
    class_weight: str | None = "balanced",
    l2: float = 1e-2,
    model_name: str | None = None,
    progress: bool = True,
) -> tuple[LinearProbe, dict[str, Any]]:
    """Extract features, fit on the training part, set the threshold on benign validation prompts."""
    labelled = [s for s in samples if s.label in ("harmful", "benign")]
    skipped = len(samples) - len(labelled)
    if skipped:
        logger.warning("%d samples with label 'unknown' are not used for fitting", skipped)
    n_h = sum(s.label == "harmful" for s in labelled)
    if n_h == 0 or n_h == len(labelled):
        raise ValueError(f"probe fitting needs harmful and benign samples; got {n_h} harmful of {len(labelled)}")
    train_idx, val_idx = stratified_split(labelled, val_fraction, seed)
    x, _ = extract_features(engine, labelled, batch_size=batch_size, progress=progress)
    y = np.array([1.0 if s.label == "harmful" else 0.0 for s in labelled])
    metadata = {
        "model": {"name": model_name, "fingerprint": engine.adapter.fingerprint()},
        "engine": {"layers": engine.selection.to_dict(), "projection": engine.projection.to_dict(),
                   "features": engine.features.to_dict()},
        "data": {"n_train": len(train_idx), "n_val": len(val_idx), "seed": seed,
                 "sources": sorted({s.source or "?" for s in labelled})},
    }
    probe = LinearProbe.fit(x[train_idx], y[train_idx], standardize=standardize, class_weight=class_weight,
                            l2=l2, metadata=metadata)
    val_benign = [i for i in val_idx if y[i] == 0]
    val_harmful = [i for i in val_idx if y[i] == 1]
    scores = probe.decision_function(x)
    probe.calibrate_scores(scores[val_benign], target_fpr)
    report = {
        "threshold": probe.threshold,
        "target_fpr": target_fpr,
        "val_fpr": float(np.mean(scores[val_benign] > probe.threshold)),
        "val_tpr": float(np.mean(scores[val_harmful] > probe.threshold)) if val_harmful else None,
        "train_accuracy": float(np.mean((scores[train_idx] > 0) == (y[train_idx] > 0.5))),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
    }
    probe.metadata["validation"] = report
    return probe, report
