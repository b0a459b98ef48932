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
import logging
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

logger = logging.getLogger(__name__)


def attacked_features(detector: ProbeDetector, samples: Sequence[Sample], cfg: AttackConfig, batch_size: int = 4,
                      progress: bool = True) -> np.ndarray:
    """The probe's input rows for ``samples``' images after PGD against ``detector`` at ``cfg``."""
    adapter = detector.engine.adapter
    rows = []
    bar = tqdm(total=len(samples), desc="attacking training images", unit="image", disable=not progress)
    for chunk in batches(list(samples), batch_size):
        images = [load_image(s) for s in chunk]
        targets = [s.meta.get("rendered_text") or s.prompt for s in chunk]
        outcomes = attack_batch(adapter, detector, [s.prompt for s in chunk], images, cfg, targets)
        for s, image, o in zip(chunk, images, outcomes):
            space = PixelSpace(adapter, [s.prompt], [image])
            with torch.no_grad():
                rows.append(probe_features(adapter, detector, space.inputs_for(o.raw)).float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(rows) if rows else np.zeros((0, detector.probe.dim))


def adversarial_refit(detector: ProbeDetector, train: Sequence[Sample], val: Sequence[Sample], cfg: AttackConfig,
                      *, target_fpr: float = 0.05, batch_size: int = 4, seed: int = 0,
                      progress: bool = True) -> tuple[ProbeDetector, dict[str, Any]]:
    """``detector``'s probe refitted on ``train`` plus its harmful images attacked against it
    (module docstring); the threshold from ``val``'s benign prompts.  Returns the new detector
    (named ``<name>+adv``) and its fitting report, with how many attacked images it saw."""
    if not isinstance(detector, ProbeDetector):
        raise TypeError(f"adversarial refitting needs a probe detector, not {type(detector).__name__}")
    engine = detector.engine
    labelled, train_idx, val_idx = labelled_split(train, val, 0.25, seed)
    x, _ = extract_features(engine, labelled, batch_size=batch_size, progress=progress)
    harmful = [labelled[i] for i in train_idx if labelled[i].label == "harmful" and labelled[i].image is not None]
    if not harmful:
        raise ValueError("adversarial refitting needs harmful training samples with images")
    x_adv = attacked_features(detector, harmful, cfg, batch_size, progress)
    twins = [dataclasses.replace(s, id=f"{s.id}#attacked") for s in harmful]
    rows = list(range(len(labelled), len(labelled) + len(twins)))
    probe, report = fit_on_features(engine, engine.features, np.concatenate([x, x_adv]), labelled + twins,
                                    train_idx + rows, val_idx, target_fpr=target_fpr, seed=seed,
                                    model_name=(detector.probe.metadata.get("model") or {}).get("name"))
    report = {**report, "attacked_training_images": len(twins), "epsilon": cfg.epsilon, "steps": cfg.steps}
    probe.metadata.setdefault("training", {})["adversarial"] = {"epsilon": cfg.epsilon, "steps": cfg.steps,
                                                                "keep": cfg.keep, "images": len(twins)}
    return ProbeDetector(engine, probe, f"{detector.name}+adv"), report
