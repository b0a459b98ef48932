"""``sasa analyze`` as a function: every per-layer analysis on one model and one data set, the
recommended (s, f), the profile and the report, all under one output folder.

Folder layout (``out_dir``):

* ``activations/`` - the per-sample, per-block state cache (:mod:`sasa.analysis.activations`);
* ``pairs/`` - FigStep renderings made for the cross-modal metric, and their ``manifest.jsonl``;
* ``heads.jsonl`` - one line per ablated head, appended as each finishes (resumable);
* ``curves.json``, ``plots/*.png``, ``plots/*.svg``, ``analysis.html`` - the report;
* ``profile.json`` - the model profile that ``--profile`` reads.

Which samples feed which metric:

* safety probe, refusal curves: the labelled (harmful / benign) samples given by the user;
* category probe: the user's samples with a ``category`` (categories with fewer than 2 groups are
  left out);
* logit-lens readability: all the user's samples;
* cross-modal agreement: image/text pairs, i.e. ``meta["group"]`` groups holding a sample with an
  image and one without (an image carrying the text, and the same text as text). When the model
  reads images and the data has fewer than 2 such pairs, ``pairs`` text samples (half harmful, half
  benign where possible) are rendered as FigStep images (:func:`sasa.data.attacks.render_samples`,
  which keeps the group) and paired with their text. Rendered images feed this metric only, so
  the probes are about the user's data. Text-only models skip the metric, with a note.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sasa.analysis import curves as M
from sasa.analysis.activations import collect_activations
from sasa.distributed import current_shard
from sasa.analysis.heads import head_importance
from sasa.analysis.lens import REFUSAL_WORDS, lens_readout, readable_token_mask, refusal_token_ids
from sasa.analysis.profile import ModelProfile
from sasa.analysis.report import json_safe, write_analysis_report
from sasa.analysis.select import SelectionRule, select_layers
from sasa.data.sample import Sample, read_manifest, write_manifest
from sasa.data.splits import group_key, subsample
from sasa.models.adapters import Adapter

logger = logging.getLogger(__name__)


@dataclass
class AnalysisConfig:
    """What to measure and how much it may cost (CLI flags of ``sasa analyze`` map onto these).

    max_samples: cap per label (harmful / benign / unlabelled), whole groups, seeded; None = all.
    pairs: FigStep renderings to make for the cross-modal metric when the data has no pairs.
    heads / head_layers / head_heads / head_max_samples: head ablation on or off, which blocks and
    heads, and the cap per set (safety, utility).
    pair_map / pair_map_step: also the (s, f) map (:mod:`sasa.analysis.pairmap`: the SASA probe's
    validation AUROC per pair on a grid over all depths, a quarter of the labelled samples held out
    per label, seeded), with the pick marked on it.
    """

    batch_size: int = 8
    folds: int = 5
    seed: int = 0
    reg: float = 0.1
    top_k: int = 10
    refusal_words: tuple[str, ...] = REFUSAL_WORDS
    max_samples: int | None = None
    pairs: int = 16
    heads: bool = True
    head_layers: tuple[int, ...] | None = None
    head_heads: tuple[int, ...] | None = None
    head_max_samples: int | None = 16
    rule: SelectionRule = field(default_factory=SelectionRule)
    pair_map: bool = False
    pair_map_step: int | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rule"] = self.rule.to_dict()
        return d


def find_pairs(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """(image row, text row) for each image sample whose group also holds a text sample."""
    text_of: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.image is None:
            text_of.setdefault(group_key(s), i)
    return [(i, text_of[group_key(s)]) for i, s in enumerate(samples)
            if s.image is not None and group_key(s) in text_of]


def render_pairs(samples: Sequence[Sample], n: int, out_dir: Path, seed: int) -> list[Sample]:
    """FigStep images for up to ``n`` text samples (balanced by label), reusing earlier renderings."""
    from sasa.data.attacks import render_samples

    manifest = out_dir / "manifest.jsonl"
    text = [s for s in samples if s.image is None]
    by_label: dict[str, list[Sample]] = {}
    for s in text:
        by_label.setdefault(s.label, []).append(s)
    rng = np.random.default_rng(seed)
    chosen: list[Sample] = []
    labels = sorted(by_label)
    for j, label in enumerate(labels):
        pool = by_label[label]
        want = n // len(labels) + (1 if j < n % len(labels) else 0)
        idx = sorted(rng.permutation(len(pool))[:want].tolist())
        chosen += [pool[i] for i in idx]
    if manifest.is_file():
        done = {s.meta.get("base_id"): s for s in read_manifest(manifest)}
        if all(s.id in done for s in chosen) and all(Path(d.image).is_file() for d in done.values()):
            return [done[s.id] for s in chosen]
    result = render_samples(chosen, out_dir, style="figstep", on_error="skip")
    for loc, why in result.skipped:
        logger.warning("cross-modal pairs: %s not rendered: %s", loc, why)
    write_manifest(result.samples, manifest, relative_images=True)
    return list(result.samples)


def _curve_or_nan(values: Any, L: int) -> list[float]:
    return [float(v) if v is not None else math.nan for v in values] if values is not None else [math.nan] * L


def _pair_map(adapter: Adapter, labelled: list[Sample], cfg: AnalysisConfig, pick: tuple[int, int]) -> dict[str, Any]:
    from sasa.analysis.pairmap import PairMapConfig, pair_map
    from sasa.detector.fit import stratified_split

    train_idx, val_idx = stratified_split(labelled, 0.25, cfg.seed)
    result = pair_map(adapter, [labelled[i] for i in train_idx], [labelled[i] for i in val_idx],
                      PairMapConfig(step=cfg.pair_map_step, batch_size=cfg.batch_size, progress=cfg.progress))
    result["analysis_pick"] = {"s": pick[0], "f": pick[1]}
    return result


def run_analysis(
    adapter: Adapter,
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    config: AnalysisConfig | None = None,
    *,
    model_name: str | None = None,
) -> dict[str, Any] | None:
    """Run every analysis, choose (s, f), write the profile and the report; return the result dict.

    The result holds ``selection`` (s, f, reason, rule), ``curves`` (safety / heads / semantic /
    alignment), ``notes`` (metrics skipped and why), ``data`` (counts) and ``paths``. Under a
    launcher the processes share the forward passes and the others return None once they are done.
    """
    cfg = config or AnalysisConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L = adapter.num_layers
    notes: list[str] = []
    samples = list(samples)
    if not samples:
        raise ValueError("no samples to analyse")
    if not adapter.spec.takes_images:
        n_img = sum(s.image is not None for s in samples)
        if n_img:
            notes.append(f"{n_img} samples with images were left out: {adapter.spec.model_type} reads no images")
            samples = [s for s in samples if s.image is None]
    main = list(samples) if cfg.max_samples is None else subsample(samples, per_label=cfg.max_samples, seed=cfg.seed,
                                                                   whole_groups=True)
    labelled = [s for s in main if s.label in ("harmful", "benign")]
    n_h = sum(s.label == "harmful" for s in labelled)
    if n_h < 2 or len(labelled) - n_h < 2:
        raise ValueError(f"layer analysis needs at least 2 harmful and 2 benign samples; got {n_h} harmful, "
                         f"{len(labelled) - n_h} benign of {len(main)}")

    # --- cross-modal pairs (rendered only for image models whose data has none) ------------------
    extra: list[Sample] = []
    pairs = find_pairs(main)
    if not adapter.spec.takes_images:
        notes.append(f"cross-modal agreement skipped: {adapter.spec.model_type} is a text-only model")
    elif len(pairs) < 2 and cfg.pairs >= 2:
        shard = current_shard()
        if not shard.is_main:  # the main process renders; the others then read its manifest
            shard.barrier()
        extra = render_pairs(main, cfg.pairs, out / "pairs", cfg.seed)
        if shard.is_main:
            shard.barrier()
        logger.info("rendered %d FigStep images to pair with their text for cross-modal agreement", len(extra))
    elif len(pairs) < 2:
        notes.append("cross-modal agreement skipped: the data has fewer than 2 image/text pairs "
                     "(meta['group'] shared by an image sample and a text sample) and rendering is off")
    everything = main + extra
    all_pairs = find_pairs(everything) if adapter.spec.takes_images else []
    if adapter.spec.takes_images and len(all_pairs) < 2 and not any("cross-modal" in n for n in notes):
        notes.append(f"cross-modal agreement skipped: only {len(all_pairs)} image/text pairs (2 needed)")

    # --- one forward per sample ---------------------------------------------------------------------
    states = collect_activations(adapter, everything, out / "activations", batch_size=cfg.batch_size,
                                 model_name=model_name, progress=cfg.progress)
    if not current_shard().is_main:  # data parallel: the forwards were shared; the main process goes on alone
        return None
    row = {s.id: i for i, s in enumerate(everything)}
    lab_rows = np.array([row[s.id] for s in labelled])
    y = np.array([s.label == "harmful" for s in labelled], dtype=float)
    groups = [group_key(s) for s in labelled]

    curves: dict[str, Any] = {}
    curves["safety"] = M.probe_curve(states[lab_rows], y, groups=groups, folds=cfg.folds, seed=cfg.seed,
                                     reg=cfg.reg, progress=cfg.progress)
    semantic: dict[str, Any] = {}
    main_rows = np.array([row[s.id] for s in main])
    try:
        semantic["category"] = M.category_curve(states[main_rows], [s.category for s in main],
                                                groups=[group_key(s) for s in main], folds=cfg.folds,
                                                seed=cfg.seed, reg=cfg.reg, progress=cfg.progress)
    except ValueError as exc:
        semantic["category"] = None
        notes.append(f"category probe skipped: {exc}")
    if len(all_pairs) >= 2:
        semantic["crossmodal"] = M.crossmodal_curve(states, all_pairs)
        semantic["crossmodal"]["n_pairs"] = len(all_pairs)
    else:
        semantic["crossmodal"] = None
    vocab = int(adapter.unembedding.weight.shape[0])
    tok = adapter.tokenizer
    refusal_ids = refusal_token_ids(tok, cfg.refusal_words, vocab)
    lens = lens_readout(adapter, states[main_rows], refusal_ids, top_k=cfg.top_k, batch_size=64,
                        progress=cfg.progress)
    semantic["readability"] = M.readability_curve(lens.top_ids, readable_token_mask(tok, vocab))
    curves["semantic"] = semantic
    pos = {s.id: i for i, s in enumerate(main)}
    lab_in_main = np.array([pos[s.id] for s in labelled])
    alignment = M.refusal_curve(lens.refusal_prob[lab_in_main], lens.refusal_rank[lab_in_main], y > 0.5)
    alignment["refusal_tokens"] = [tok.decode([i]) for i in refusal_ids]
    curves["alignment"] = alignment

    # --- head ablation ----------------------------------------------------------------------------
    heads = None
    if cfg.heads:
        heads = head_importance(adapter, labelled, layers=cfg.head_layers, heads=cfg.head_heads,
                                max_samples=cfg.head_max_samples, batch_size=cfg.batch_size, seed=cfg.seed,
                                records_path=out / "heads.jsonl", progress=cfg.progress)
    else:
        notes.append("head ablation skipped (turned off); s is chosen among all blocks of the search range")
    curves["heads"] = heads

    # --- selection, profile, report -----------------------------------------------------------------
    flat = {
        "probe_dprime": curves["safety"]["dprime"], "probe_auroc": curves["safety"]["auroc"],
        "probe_accuracy": curves["safety"]["accuracy"],
        "crossmodal_agreement": semantic["crossmodal"]["agreement"] if semantic["crossmodal"] else None,
        "category_accuracy": semantic["category"]["accuracy"] if semantic["category"] else None,
        "readability": semantic["readability"],
    }
    selection = select_layers(flat, L, heads=heads, refusal_emergence=alignment["emergence"], rule=cfg.rule)
    data = {"samples": len(main), "harmful": n_h, "benign": len(labelled) - n_h,
            "image samples": sum(s.image is not None for s in main), "cross-modal pairs": len(all_pairs),
            "rendered images": len(extra)}
    if heads is not None:
        data["head-ablation prompts"] = f"{heads['n_safety']} harmful + {heads['n_utility']} benign"
    result: dict[str, Any] = {
        "model": model_name, "fingerprint": adapter.fingerprint(), "num_layers": L,
        "selection": selection.to_dict(), "curves": curves, "notes": notes + selection.details.get("notes", []),
        "data": data, "config": cfg.to_dict(),
    }
    summary = {
        "safety_peak_layer": selection.details.get("safety_peak_layer"),
        "safety_peak": selection.details.get("safety_peak"),
        "fused_metric": selection.details.get("fused_metric"),
        "refusal_emergence": alignment["emergence"],
        "top_heads": (heads or {}).get("ranked", [])[:cfg.rule.top_heads],
    }
    profile = ModelProfile(fingerprint=adapter.fingerprint(), safety=selection.safety, fused=selection.fused,
                           indexing="0-based", model=model_name, reason=selection.reason, rule=selection.rule,
                           summary=json_safe(summary), curves=json_safe({k: _curve_or_nan(v, L) for k, v in flat.items()
                                                                         if v is not None}),
                           data=data)
    if cfg.pair_map:
        result["pair_map"] = _pair_map(adapter, labelled, cfg, (selection.safety, selection.fused))
    paths = write_analysis_report(result, out)
    paths["profile"] = profile.save_pretrained(out)
    result["paths"] = {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in paths.items()}
    logger.info("recommended (s, f) = (%d, %d): %s", selection.safety, selection.fused, selection.reason)
    return result


def pick_stability(adapter: Adapter, samples: Sequence[Sample], out_dir: Any, seeds: Sequence[int],
                   config: Any = None, *, model_name: str | None = None) -> dict[str, Any]:
    """The analysis' pick, the map's maximum and its smoothed maximum over sample draws.

    For each seed the analysis runs (with the map) on that seed's draw of the samples
    (``config.max_samples`` per label, whole groups) into ``out_dir/seed-N``; the result counts how
    often each rule's pick agrees with its most common one."""
    from collections import Counter
    from dataclasses import replace
    from pathlib import Path

    from sasa.analysis.pairmap import grid_value

    if len(seeds) < 2:
        raise ValueError("stability needs at least 2 seeds")
    config = config or AnalysisConfig()
    if config.max_samples is None:
        logger.warning("max_samples is not set: every seed analyses the same samples, only the folds differ")
    picks: dict[str, list[tuple[int, int]]] = {"analysis": [], "map_maximum": [], "map_smoothed_maximum": []}
    runs = []
    for seed in seeds:
        result = run_analysis(adapter, samples, Path(out_dir) / f"seed-{seed}",
                              replace(config, seed=seed, pair_map=True), model_name=model_name)
        if result is None:  # another process of a data-parallel run
            continue
        pm, sel = result["pair_map"], result["selection"]
        picks["analysis"].append((sel["safety"], sel["fused"]))
        picks["map_maximum"].append((pm["best"]["s"], pm["best"]["f"]))
        picks["map_smoothed_maximum"].append((pm["smoothed_best"]["s"], pm["smoothed_best"]["f"]))
        runs.append({"seed": seed, "analysis": list(picks["analysis"][-1]), "map_maximum": list(picks["map_maximum"][-1]),
                     "map_smoothed_maximum": list(picks["map_smoothed_maximum"][-1]),
                     "map_auroc_at_analysis_pick": grid_value(pm, *picks["analysis"][-1]),
                     "noproj_auroc": pm["noproj_auroc"]})
    agreement = {}
    for rule, chosen in picks.items():
        if chosen:
            mode, count = Counter(chosen).most_common(1)[0]
            agreement[rule] = {"most_common": list(mode), "agree": count, "of": len(chosen)}
    return {"seeds": list(seeds), "runs": runs, "agreement": agreement}
