"""An adaptive defence: the probe refitted on its own training images attacked against it.

Adversarial training of the probe only (the model is untouched): every harmful training image is
attacked with PGD against the fitted probe (the attack's settings, its ε and its keep term), the
attacked images' features join the training set as harmful, the probe is refitted with the same
recipe and its threshold set again on the benign validation prompts at the same FPR target.  What
it costs shows as the benign test prompts it flags; what it buys, as the attacked test images it
still flags (``sasa attack --defence adversarial``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sasa.attack.pgd import AttackConfig, attack_batch
from sasa.attack.pixels import PixelSpace
from sasa.attack.scores import probe_features
from sasa.data.sample import Sample
from sasa.detector.detectors import ProbeDetector
from sasa.detector.fit import fit_on_features, labelled_split
from sasa.engine.samples import batches, extract_features, load_image
from sasa.store.atomic import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)


def _probe_digest(detector: ProbeDetector) -> str:
    """The attacked probe's identity: its tensors as a probe directory stores them (float32, so the
    probe just fitted and the same probe read back from disk agree) and its layers."""
    probe = detector.probe
    h = hashlib.sha256()
    for t in (probe.weight, torch.tensor([probe.bias]), probe.mean, probe.std):
        if t is not None:
            h.update(t.detach().to(torch.float32).cpu().numpy().tobytes())
    engine = detector.engine
    h.update(repr((getattr(engine, "s", None), getattr(engine, "f", None), engine.features)).encode())
    return h.hexdigest()[:16]


def attacked_features(detector: ProbeDetector, samples: Sequence[Sample], cfg: AttackConfig, batch_size: int = 4,
                      progress: bool = True, store: str | os.PathLike | None = None) -> np.ndarray:
    """The probe's input rows for ``samples``' images after PGD against ``detector`` at ``cfg``.

    With ``store`` (a folder), each batch's rows are saved there as they are computed and a rerun
    with the same detector, samples and settings continues after the last saved batch; other
    settings are refused rather than mixed in."""
    adapter = detector.engine.adapter
    samples = list(samples)
    saved: dict[int, np.ndarray] = {}
    if store is not None:
        store = Path(store)
        settings = {"attack": dataclasses.asdict(cfg), "samples": [s.id for s in samples],
                    "probe": _probe_digest(detector), "batch_size": batch_size}
        recorded = store / "settings.json"
        if recorded.is_file():
            if json.loads(recorded.read_text()) != json.loads(json.dumps(settings)):
                raise ValueError(f"{store}: attacked features of other settings (attack, samples or probe); "
                                 f"use another folder or remove it")
        else:
            atomic_write_json(recorded, settings)
        for path in store.glob("batch-*.npy"):
            saved[int(path.stem.split("-")[1])] = np.load(path, allow_pickle=False)
    rows = []
    bar = tqdm(total=len(samples), desc="attacking training images", unit="image", disable=not progress)
    for b, chunk in enumerate(batches(samples, batch_size)):
        if b in saved:
            rows.append(saved[b])
            bar.update(len(chunk))
            continue
        images = [load_image(s) for s in chunk]
        targets = [s.meta.get("rendered_text") or s.prompt for s in chunk]
        outcomes = attack_batch(adapter, detector, [s.prompt for s in chunk], images, cfg, targets)
        batch_rows = []
        for s, image, o in zip(chunk, images, outcomes):
            space = PixelSpace(adapter, [s.prompt], [image])
            with torch.no_grad():
                batch_rows.append(probe_features(adapter, detector, space.inputs_for(o.raw)).float().cpu().numpy())
        rows.append(np.concatenate(batch_rows))
        if store is not None:
            with atomic_path(store / f"batch-{b:05d}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, rows[-1], allow_pickle=False)
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(rows) if rows else np.zeros((0, detector.probe.dim))


def adversarial_refit(detector: ProbeDetector, train: Sequence[Sample], val: Sequence[Sample], cfg: AttackConfig,
                      *, target_fpr: float = 0.05, batch_size: int = 4, seed: int = 0, images: int | None = None,
                      store: str | os.PathLike | None = None, progress: bool = True) -> tuple[ProbeDetector, dict[str, Any]]:
    """``detector``'s probe refitted on ``train`` plus its harmful images attacked against it
    (module docstring); the threshold from ``val``'s benign prompts.  Returns the new detector
    (named ``<name>+adv``) and its fitting report, with how many attacked images it saw.  ``images``
    attacks a seeded share of the harmful training images only (each costs a full PGD run);
    ``store`` keeps their attacked features as they come, so a stopped refit resumes
    (:func:`attacked_features`).  The clean training features are the detector's
    ``training_features`` when it has them for these samples, else extracted again."""
    if not isinstance(detector, ProbeDetector):
        raise TypeError(f"adversarial refitting needs a probe detector, not {type(detector).__name__}")
    if images is not None and images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    engine = detector.engine
    labelled, train_idx, val_idx = labelled_split(train, val, 0.25, seed)
    known = detector.training_features.for_samples(labelled) if detector.training_features is not None else None
    if known is not None:
        x = known
    else:
        x, _ = extract_features(engine, labelled, batch_size=batch_size, progress=progress)
    harmful = [labelled[i] for i in train_idx if labelled[i].label == "harmful" and labelled[i].image is not None]
    if not harmful:
        raise ValueError("adversarial refitting needs harmful training samples with images")
    if images is not None:
        harmful = [harmful[i] for i in sorted(random.Random(seed).sample(range(len(harmful)), min(images, len(harmful))))]
    x_adv = attacked_features(detector, harmful, cfg, batch_size, progress, store=store)
    twins = [dataclasses.replace(s, id=f"{s.id}#attacked") for s in harmful]
    rows = list(range(len(labelled), len(labelled) + len(twins)))
    probe, report = fit_on_features(engine, engine.features, np.concatenate([x, x_adv]), labelled + twins,
                                    train_idx + rows, val_idx, target_fpr=target_fpr, seed=seed,
                                    model_name=(detector.probe.metadata.get("model") or {}).get("name"))
    report = {**report, "attacked_training_images": len(twins), "epsilon": cfg.epsilon, "steps": cfg.steps}
    probe.metadata.setdefault("training", {})["adversarial"] = {"epsilon": cfg.epsilon, "steps": cfg.steps,
                                                                "keep": cfg.keep, "images": len(twins)}
    return ProbeDetector(engine, probe, f"{detector.name}+adv"), report
