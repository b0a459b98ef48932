"""``sasa demo``: the main job, offline, on what ships with the package.

Loads the model organism (``sasa-organism``: SmolLM2-135M-Instruct with a text-only refusal LoRA
and a from-scratch reader, see ``sasa.zoo``), builds the offline default dataset (the project's
benign set, HarmBench and StrongREJECT from their PyPI packages), splits it by family (train:
HarmBench + benign; test: StrongREJECT, unseen in training, + held-out benign), and, because the
model reads images, types every request on a FigStep page: the harmful meaning arrives only through
the image.  SASA's probe and the baselines are fitted on the training pages; vanilla / SASA detect /
no-projection probe / HiddenDetect are evaluated on the test pages, and the vanilla model also
answers the harmful test requests as plain text, which shows the gap SASA closes.  With a text-only
model (``--model smollm2-135m``) the same pipeline runs on the text prompts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from sasa import metrics as M
from sasa.data.registry import builtin_dataset
from sasa.data.splits import assign_splits, class_balance, subsample
from sasa.evaluation.runner import PRIMARY_JUDGE_WHY
from sasa.engine.layers import default_layers
from sasa.models.loading import load_model
from sasa.guard.modes import DEMO_MODES
from sasa.evaluation.pipeline import run_pipeline

logger = logging.getLogger(__name__)

DEMO_MODEL = "sasa-organism"
SIZES = {  # prompts per label in each split (None = all), answer length, bootstrap resamples
    "quick": ({"train": 24, "val": 16, "test": 16}, 24, 200),  # the CI-sized smoke run
    "default": ({"train": 40, "val": 32, "test": 50}, 48, 1000),  # sized for ten minutes on two CPU cores
    "full": ({"train": None, "val": None, "test": 120}, 64, 1000),  # every training page; tighter intervals
}


def _selection(adapter: Any, model: str) -> tuple[Any, str]:
    """The organism's (s, f) as its measured analysis chose it (kept with its weights; refused when
    measured on other weights), else the default; and where they came from, in words."""
    if model == DEMO_MODEL:
        from sasa.zoo.organism import layer_record, recommended_layers

        chosen = recommended_layers()
        if chosen is not None:
            why = layer_record().get("reason")
            return chosen, ("the organism's analysis (sasa zoo record organism), recorded with its weights"
                            + (f": {why}" if why else ""))
    return default_layers(adapter.num_layers), ("the default scaled from LLaVA-1.5-7B's (13, 15) of 32: no analysis "
                                                "is recorded for these weights")


def threshold_transfer(records: list[dict], fit_info: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Per detector: the threshold the guard used (set on the validation benign prompts at the
    target FPR), the FPR it had there, and the share of the *test* benign prompts it flagged, with a
    95 % bootstrap interval: whether the validation threshold transfers to unseen benign prompts."""
    import numpy as np

    from sasa.metrics import bootstrap_ci

    out: dict[str, Any] = {}
    for mode, info in fit_info.items():
        benign = [r for r in records if r["mode"] == mode and r["label"] == "benign" and r["decision"] != "error"]
        if not benign:
            continue
        flagged = np.array([r["decision"] == "refuse" for r in benign], dtype=float)
        ci = bootstrap_ci(lambda f: float(f.mean()), flagged, n_boot=1000, seed=seed)
        target = info.get("target_fpr", 0.05)
        out[mode] = {"threshold": info.get("threshold"), "target_fpr": target, "validation_fpr": info.get("val_fpr"),
                     "test_benign_flagged": ci.value, "low": ci.low, "high": ci.high, "n_test_benign": len(benign),
                     "transfers": bool(ci.low <= target <= ci.high)}
    return out


def benchmark_test_items(figstep: str | Path | None, xstest: str | Path | None, pages_dir: Path,
                         takes_images: bool, limit: int | None = None, seed: int = 0,
                         progress: bool = True) -> list:
    """The published benchmarks' test items the user has: FigStep's images with FigStep's prompt
    (harmful; ``safebench.csv`` + ``images/SafeBench/``) -- or, for a text-only model, FigStep's
    questions as text -- and XSTest's safe prompts (benign), typed on FigStep pages for a model that
    reads images.  ``limit`` caps each at that many, seeded."""
    from sasa.data.registry import load

    items: list = []
    if figstep is not None:
        variant = "figstep" if takes_images else "text"
        fs = load("figstep", figstep, variant=variant, check_images="exists" if takes_images else "none").samples
        items += subsample(fs, per_label=limit, seed=seed) if limit else fs
    if xstest is not None:
        xs = load("xstest", xstest, variant="safe").samples
        xs = subsample(xs, per_label=limit, seed=seed) if limit else xs
        if takes_images:
            from sasa.data.pages import page_samples

            xs = page_samples(xs, pages_dir, progress=progress)
        items += xs
    return [dataclasses.replace(s, split="test") for s in items]


def refusal_rates(records: list[dict], judges: Any, what: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The share of ``records`` refused, with its bootstrap interval, under the primary and every judge."""
    def rate(flags: Any) -> float:
        return float(np.mean(flags))

    refused = np.array([bool(r["refused"]) for r in records], dtype=bool)
    out: dict[str, Any] = {"n": len(records), "what": what}
    if not len(records):
        return {**out, "rate": None, "ci": None, "by_judge": {}}
    ci = M.bootstrap_ci(rate, refused, n_boot=n_boot, seed=seed).to_dict()
    return {**out, "rate": ci["value"], "ci": ci,
            "by_judge": {j.name: rate([r["verdicts"].get(j.name, r["refused"]) for r in records]) for j in judges}}


def unseen_test(data: list[Any], trained: set[str]) -> tuple[list[Any], dict[str, int]]:
    """The test split without a request the model's refusal training saw: a harmful test item it
    trained on is left out; every benign item it never saw is tested and a benign test item it saw
    trains the detectors instead.  Returns the samples and the counts moved."""
    from sasa.zoo.refusal_data import request_key

    out, counts = [], {"harmful_left_out": 0, "benign_to_test": 0, "benign_to_train": 0}
    for s in data:
        seen = request_key(s.prompt) in trained
        if s.is_harmful and s.split == "test" and seen:
            counts["harmful_left_out"] += 1
            continue
        if s.label == "benign" and s.split != "test" and not seen:
            s, counts["benign_to_test"] = dataclasses.replace(s, split="test"), counts["benign_to_test"] + 1
        elif s.label == "benign" and s.split == "test" and seen:
            s, counts["benign_to_train"] = dataclasses.replace(s, split="train"), counts["benign_to_train"] + 1
        out.append(s)
    return out, counts


def run_demo(out: str | Path = "runs/demo", quick: bool = False, seed: int = 0, model: str = DEMO_MODEL,
             batch_size: int = 8, progress: bool = True, per_label: int | None = None,
             figstep: str | Path | None = None, xstest: str | Path | None = None, full: bool = False) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary and the report paths. The run's size is
    :data:`SIZES` ``quick``, ``full`` or (neither) ``default``; ``per_label`` caps every split at that
    many prompts per label (a smoke run).  ``figstep`` / ``xstest``: folders of the
    published benchmarks, whose items join the test set (FigStep's images harmful, XSTest's safe
    prompts benign); the report then gives every metric per source as well as pooled."""
    start = time.perf_counter()
    out = Path(out)
    if quick and full:
        raise ValueError("quick and full exclude each other")
    size = "quick" if quick else "full" if full else "default"
    sizes, max_new_tokens, n_boot = SIZES[size]
    if model == DEMO_MODEL:
        from sasa.zoo.organism import recommended_layers

        recommended_layers()  # a record measured on other weights stops the demo before anything loads
    loaded = load_model(model, device="auto")
    adapter = loaded.adapter
    selection, selection_source = _selection(adapter, model)
    data = assign_splits(builtin_dataset(), "builtin")
    unseen = None
    if model == DEMO_MODEL:
        from sasa.zoo.organism import refusal_trained_requests

        data, unseen = unseen_test(data, refusal_trained_requests())
    if per_label is not None:
        if per_label < 1:
            raise ValueError(f"per_label must be at least 1, got {per_label}")
        sizes = {k: per_label if v is None else min(v, per_label) for k, v in sizes.items()}
    if adapter.spec.takes_images:  # pages whose openings can be balanced by label (sasa.data.pages)
        from sasa.data.pages import placeable

        data = [s for s in data if placeable(s.prompt)]
    parts = {k: subsample([s for s in data if s.split == k], per_label=sizes[k], seed=seed)
             for k in ("train", "val", "test")}
    text_test = [s for s in parts["test"] if s.is_harmful]
    if adapter.spec.takes_images:
        from sasa.data.pages import balanced_statements, page_samples

        parts = {k: page_samples(v, out / "pages", progress=progress, statements=balanced_statements(v, seed))
                 for k, v in parts.items()}
    if figstep is not None or xstest is not None:
        parts["test"] = parts["test"] + benchmark_test_items(
            figstep, xstest, out / "pages", adapter.spec.takes_images,
            limit=sizes["test"] if size != "full" or per_label else None, seed=seed, progress=progress)
    for k, v in parts.items():
        logger.info("%s split: %s", k, class_balance(v))
    s, f = selection.resolve(adapter.num_layers)

    def run_info(records: list[dict], evaluation: Any, fit_info: dict) -> dict[str, Any]:
        info = {"model": model, "layers": {"s": s, "f": f, "indexing": "0-based", "from": selection_source},
                "size": size, "quick": quick, "seed": seed, "max_new_tokens": max_new_tokens,
                "benchmarks": {"figstep": str(figstep) if figstep else None,
                               "xstest": str(xstest) if xstest else None},
                **({"per_label": per_label} if per_label is not None else {}),
                **({"test_unseen_by_refusal_training": unseen} if unseen is not None else {}),
                "splits": {k: class_balance(v) for k, v in parts.items()}, "detectors": fit_info}
        if adapter.spec.takes_images:
            from sasa.data.pages import text_twins

            info["text_refusal"] = refusal_rates(evaluation.run(text_test, ["vanilla"]), evaluation.judges,
                                                 "vanilla model, the harmful test requests as plain text",
                                                 n_boot=n_boot, seed=seed)
            pages = [s for s in parts["test"] if s.is_harmful and s.attack == "figstep-page"]
            info["page_text_refusal"] = refusal_rates(
                evaluation.run(text_twins(pages), ["vanilla"]), evaluation.judges,
                "vanilla model, each harmful test page's words as text with FigStep's prompt", n_boot=n_boot, seed=seed)
            ids = {s.id for s in pages}
            info["page_refusal"] = refusal_rates(
                [r for r in records if r["mode"] == "vanilla" and r["id"] in ids], evaluation.judges,
                "vanilla model, the same requests typed on pages", n_boot=n_boot, seed=seed)
        info["threshold_transfer"] = threshold_transfer(records, fit_info, seed=seed)
        info["judges"] = {"names": [j.name for j in evaluation.judges], "why": PRIMARY_JUDGE_WHY}
        info["seconds"] = round(time.perf_counter() - start, 1)
        return info

    run = run_pipeline(adapter, parts["test"], DEMO_MODES, out, train=parts["train"], val=parts["val"],
                       selection=selection, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       title=f"SASA demo on {model}", n_boot=n_boot, model_name=model, run_info=run_info,
                       progress=progress)
    result = {"summary": run.summary, **run.paths}
    result["run"] = run.summary["run"]
    return result
