"""Fit and calibrate a SASA probe for one model from labelled samples."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, Sequence

import numpy as np
import torch

from sasa.data.sample import Sample
from sasa.engine import FeatureSpec, SASAEngine
from sasa.engine.samples import extract_features
from sasa.detector.probe import LinearProbe

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
    validation: Sequence[Sample] | None = None,
) -> tuple[LinearProbe, dict[str, Any]]:
    """Extract features, fit on the training part, set the threshold on benign validation prompts.

    With ``validation`` given, ``samples`` are all training and the threshold comes from
    ``validation``'s benign prompts; otherwise a stratified ``val_fraction`` is held out.
    """
    labelled, train_idx, val_idx = labelled_split(samples, validation, val_fraction, seed)
    x, _ = extract_features(engine, labelled, batch_size=batch_size, progress=progress)
    return fit_on_features(engine, engine.features, x, labelled, train_idx, val_idx, target_fpr=target_fpr,
                            seed=seed, standardize=standardize, class_weight=class_weight, l2=l2,
                            model_name=model_name)


def labelled_split(samples: Sequence[Sample], validation: Sequence[Sample] | None, val_fraction: float,
                    seed: int) -> tuple[list[Sample], list[int], list[int]]:
    """The harmful/benign samples and their (train, validation) indices."""
    if validation is not None:
        samples = list(samples) + list(validation)
    labelled = [s for s in samples if s.label in ("harmful", "benign")]
    skipped = len(samples) - len(labelled)
    if skipped:
        logger.warning("%d samples with label 'unknown' are not used for fitting", skipped)
    n_h = sum(s.label == "harmful" for s in labelled)
    if n_h == 0 or n_h == len(labelled):
        raise ValueError(f"probe fitting needs harmful and benign samples; got {n_h} harmful of {len(labelled)}")
    if validation is None:
        train_idx, val_idx = stratified_split(labelled, val_fraction, seed)
        return labelled, train_idx, val_idx
    val_ids = {s.id for s in validation}
    val_idx = [i for i, s in enumerate(labelled) if s.id in val_ids]
    train_idx = [i for i, s in enumerate(labelled) if s.id not in val_ids]
    if not any(labelled[i].label == "benign" for i in val_idx):
        raise ValueError("the validation samples hold no benign prompt to set the threshold on")
    return labelled, train_idx, val_idx


def fit_on_features(engine: SASAEngine, features: FeatureSpec, x: np.ndarray, labelled: Sequence[Sample],
                     train_idx: list[int], val_idx: list[int], *, target_fpr: float, seed: int,
                     standardize: bool = True, class_weight: str | None = "balanced", l2: float = 1e-2,
                     model_name: str | None = None) -> tuple[LinearProbe, dict[str, Any]]:
    """Fit on the training rows of ``x``, set the threshold on the benign validation rows."""
    y = np.array([1.0 if s.label == "harmful" else 0.0 for s in labelled])
    with_image = sum(labelled[i].image is not None for i in train_idx)
    if with_image == 0 and engine.adapter.spec.takes_images:
        logger.warning("the detector is fitted on text prompts only, but %s takes images: its scores and threshold "
                       "on image prompts will be uncalibrated (fit it on samples with images too)",
                       type(engine.adapter.model).__name__)
    metadata = {
        "model": {"name": model_name, "fingerprint": engine.adapter.fingerprint()},
        "engine": {"layers": engine.selection.to_dict(), "projection": engine.projection.to_dict(),
                   "features": features.to_dict()},
        "data": {"n_train": len(train_idx), "n_val": len(val_idx), "n_with_image": with_image, "seed": seed,
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


def fit_detectors(
    adapter: Any,
    train: Sequence[Sample],
    validation: Sequence[Sample],
    selection: Any,
    which: Sequence[str] = ("detect", "probe-noproj", "hiddendetect"),
    *,
    target_fpr: float = 0.05,
    few_shot: int = 16,
    batch_size: int = 8,
    seed: int = 0,
    model_name: str | None = None,
    hiddendetect: Any = None,
    progress: bool = True,
    keep_features: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit SASA's probe and the detector baselines on the same data; thresholds at ``target_fpr``.

    ``detect``: probe on projected next-token logits (paper). ``probe-noproj``: the same recipe on the
    plain forward's logits. ``hiddendetect`` (a :class:`~sasa.detector.detectors.HiddenDetectConfig`, default
    the official behaviour): its layer range is the config's fixed one, else the official scripts'
    one for ``model_name`` when they name it, else the config's rule on ``few_shot`` training prompts
    (half harmful); its threshold, which the official code does not have, is set on the validation
    benign prompts like the probes'. ``keep_features`` leaves each probe's training features on its
    detector (``training_features``, a row of vocabulary logits per sample) for a later refit.
    """
    from sasa.detector.detectors import (HiddenDetect, HiddenDetectConfig, ProbeDetector, TrainingFeatures,
                                         official_layers)
    from sasa.detector.probe import threshold_at_fpr

    detectors: dict[str, Any] = {}
    info: dict[str, Any] = {}
    probes = [(name, projected) for name, projected in (("detect", True), ("probe-noproj", False))
              if name in which]
    if probes:
        # One prefill per sample serves both probes: it yields projected and plain next-token logits.
        # With HiddenDetect too, the same prefill keeps every block's last-position output for it.
        projected_engine = SASAEngine(adapter, selection, features=FeatureSpec("logits", projected=True))
        labelled, train_idx, val_idx = labelled_split(train, validation, 0.25, seed)
        blocks = range(adapter.num_layers) if "hiddendetect" in which else ()
        x_proj, extra = extract_features(projected_engine, labelled, batch_size=batch_size, progress=progress,
                                         vanilla_logits=any(not p for _, p in probes), capture_layers=blocks)
        if blocks:
            states = {k: torch.from_numpy(extra[k]) for k in blocks}
            hd_rows = {s.id: i for i, s in enumerate(labelled)}
        for name, projected in probes:
            features = FeatureSpec("logits", projected=projected)
            engine = projected_engine if projected else SASAEngine(adapter, selection, features=features)
            x = x_proj if projected else extra["logits_vanilla"]
            probe, report = fit_on_features(engine, features, x, labelled, train_idx, val_idx,
                                             target_fpr=target_fpr, seed=seed, model_name=model_name)
            detectors[name] = ProbeDetector(engine, probe, name,
                                            TrainingFeatures.of(labelled, x) if keep_features else None)
            info[name] = report
    if "hiddendetect" in which:
        config = hiddendetect or HiddenDetectConfig()
        source = "option"
        if config.layers is None and official_layers(model_name) is not None:
            config = dataclasses.replace(config, layers=official_layers(model_name))
            source = "official scripts' range for this model"
        rng = random.Random(seed)
        harmful = [s for s in train if s.label == "harmful"]
        benign = [s for s in train if s.label == "benign"]
        shots = rng.sample(harmful, min(few_shot // 2, len(harmful))) + rng.sample(benign, min(few_shot // 2,
                                                                                              len(benign)))
        hd = HiddenDetect(adapter, config)
        val_benign = [s for s in validation if s.label == "benign"]
        if probes:  # the probes' prefill kept every block's output: no pass of HiddenDetect's own
            with torch.inference_mode():
                sims = hd.similarities(states).numpy()
            rows = lambda chosen: np.array([hd_rows[s.id] for s in chosen])  # noqa: E731
            cal = hd.calibrate_similarities(sims[rows(shots)], np.array([s.label == "harmful" for s in shots]),
                                            target_fpr)
            scores = hd._area(sims[rows(val_benign)])
        else:
            from sasa.engine.samples import batches as _batches

            cal = hd.calibrate(shots, target_fpr, batch_size=batch_size)
            scores = np.concatenate([hd.score(b) for b in _batches(val_benign, batch_size)])
        if config.layers is None:
            source = f"rule {config.layer_rule!r} on {len(shots)} few-shot training prompts"
        hd.threshold = threshold_at_fpr(scores, target_fpr)
        detectors["hiddendetect"] = hd
        info["hiddendetect"] = {"layers": cal["layers"], "layers_from": source, "threshold": hd.threshold,
                                "few_shot": len(shots), "config": dataclasses.asdict(config),
                                "refusal_tokens": len(hd.token_ids)}
    return detectors, info


def assemble_detectors(adapter: Any, needed: Sequence[str], train: Sequence[Sample], val: Sequence[Sample],
                       given: dict[str, Any] | None = None, *, selection: Any = None, target_fpr: float = 0.05,
                       batch_size: int = 8, seed: int = 0, model_name: str | None = None, hiddendetect: Any = None,
                       progress: bool = True, keep_features: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The detectors ``needed`` for a run and what fitting them measured: a probe directory
    ``given`` for ``detect`` / ``probe-noproj`` is loaded (refused when made for another model), and
    the rest are fitted by :func:`fit_detectors` on ``train`` and ``val`` (``keep_features``: there)."""
    from sasa.detector.detectors import ProbeDetector
    from sasa.detector.probe import engine_from_probe

    given = {k: v for k, v in (given or {}).items() if v}
    detectors: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name in needed:
        if name in given and name in ("detect", "probe-noproj"):
            probe = LinearProbe.from_pretrained(given[name], expect_fingerprint=adapter.fingerprint())
            detectors[name] = ProbeDetector(engine_from_probe(adapter, probe), probe, name)
    missing = [d for d in needed if d not in detectors]
    if missing:
        if not train or not val:
            raise ValueError(f"{missing} need detectors: give fitted ones, or data with train/val splits "
                             "(e.g. --split-preset unseen-families)")
        if selection is None:
            raise ValueError(f"fitting {missing} needs the layer selection (s, f)")
        fitted, info = fit_detectors(adapter, train, val, selection, missing, target_fpr=target_fpr,
                                     batch_size=batch_size, seed=seed, model_name=model_name,
                                     hiddendetect=hiddendetect, progress=progress, keep_features=keep_features)
        detectors.update(fitted)
    return detectors, info
