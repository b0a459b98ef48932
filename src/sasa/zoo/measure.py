"""``sasa zoo measure organism``: does the organism show the paper's phenomenon, and does SASA fix it?

One run, on real benchmark data (FigStep SafeBench, XSTest) that the organism never trained on:

1. behaviour: refusal of FigStep questions as text, of the 500 FigStep images with FigStep's prompt,
   and over-refusal of XSTest's safe prompts (as text and typed on pages);
2. reading: the reader's token accuracy on held-out pages in both fonts, and the organism's
   transcription of the FigStep images (:mod:`sasa.zoo.stages` scoring);
3. analysis: the (s, f) that ``sasa analyze`` picks from typed HarmBench/StrongREJECT/benign pages;
4. SASA and baselines at that (s, f): detectors fitted on typed pages of HarmBench, StrongREJECT and
   the project's benign set, thresholds at 5 % FPR on their validation part, tested on FigStep images
   + XSTest-safe pages (ASR, over-refusal, AUROC, TPR at 1 % and 5 % FPR).

``sasa zoo heldout organism`` (:mod:`sasa.zoo.stages`) is the separate check for choosing between
builds: refusal on the refusal data's held-out split, which neither training nor this measurement uses.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sasa.store.atomic import atomic_write_json
from sasa.data.registry import load
from sasa.data.sample import Sample
from sasa.data.splits import unit_hash
from sasa.zoo.scoring import image_features, rate, rate_by_category, transcription_samples, transcription_scores

log = logging.getLogger(__name__)

SCORING_MODES = ("vanilla", "detect", "probe-noproj", "hiddendetect")
GENERATING_MODES = ("augment", "adashield")


@dataclass(frozen=True)
class MeasureConfig:
    """Sizes of the measurement; the defaults are the ones docs/organism.md's numbers come from."""

    batch_size: int = 8
    max_new_tokens: int = 32  # a refusal shows in its first words; longer answers only cost time
    seed: int = 0
    reading_pages: int = 200
    transcribe_tokens: int = 40
    analysis_per_label: int = 64
    train_per_label: int = 250
    val_per_label: int = 100
    target_fpr: float = 0.05
    limit: int | None = None  # cap on every test set (smoke runs); None = all
    scoring_modes: tuple[str, ...] = SCORING_MODES
    generating_modes: tuple[str, ...] = GENERATING_MODES
    generating_share: float = 0.3  # the costlier generating modes run on this seeded share of the test set


def detector_pool(out: Path, seed: int, progress: bool) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Typed pages of HarmBench + StrongREJECT (harmful) and the benign set: train, validation, text twins."""
    from sasa.data.pages import page_samples

    text = [s for name, variant in (("harmbench", "standard"), ("strongreject", "full"), ("benign", "instructions"),
                                    ("benign", "statements"))
            for s in load(name, variant=variant, check_images="none").samples]
    pages = page_samples(text, out / "pages" / "train", progress=progress)
    val = [p for p in pages if unit_hash(p.meta["group"], seed) < 0.25]
    train = [p for p in pages if unit_hash(p.meta["group"], seed) >= 0.25]
    return train, val, text


@torch.no_grad()
def reading_accuracy(adapter, pages: int, seed: int) -> dict[str, Any]:
    """Reader token accuracy (nearest embedding per text cell) on unseen pages, in both fonts."""
    from sasa.zoo.reader import token_accuracy, training_fonts

    model, tok = adapter.model, adapter.tokenizer
    filler = tok(" ", add_special_tokens=False)["input_ids"][0]
    emb = model.get_input_embeddings().weight.float()
    out = {}
    for font in training_fonts():
        # training streams use TextSource seeds < 10 000, the visual stage 20 000
        out[Path(font).stem] = token_accuracy(lambda px: image_features(model, px), tok, adapter.processor.image_processor,
                                              emb, filler, font, pages, 10_000 + seed)
    return out


def organism_analysis(adapter, out: Path, cfg: MeasureConfig, model: str, progress: bool, *,
                      pair_map_step: int | None = None) -> tuple[dict[str, Any], list[Sample], list[Sample]]:
    """``sasa analyze`` on typed HarmBench/StrongREJECT/benign pages and their text twins (the
    measurement's step 3); returns the analysis result and the detector pool's train and validation
    pages.  ``pair_map_step`` adds the (s, f) map on that grid."""
    from sasa.analysis import AnalysisConfig, run_analysis
    from sasa.data.splits import subsample

    train, val, text_twins = detector_pool(out, cfg.seed, progress)
    train = subsample(train, per_label=cfg.train_per_label if cfg.limit is None else 2 * cfg.limit, seed=cfg.seed)
    val = subsample(val, per_label=cfg.val_per_label if cfg.limit is None else cfg.limit, seed=cfg.seed)
    per_label = cfg.analysis_per_label if cfg.limit is None else min(cfg.analysis_per_label, cfg.limit)
    chosen = subsample(train, per_label=per_label, seed=cfg.seed)
    twins = {s.id: s for s in text_twins}
    samples = chosen + [twins[p.meta["group"]] for p in chosen]
    acfg = AnalysisConfig(batch_size=cfg.batch_size, seed=cfg.seed, heads=False, max_samples=None, pairs=0,
                          progress=progress, pair_map=pair_map_step is not None, pair_map_step=pair_map_step)
    return run_analysis(adapter, samples, out / "analysis", acfg, model_name=model), train, val


def record_organism_layers(out: str | Path, cfg: MeasureConfig | None = None, *, pair_map_step: int | None = None,
                           progress: bool = True) -> dict[str, Any]:
    """Run the organism's analysis alone and record its (s, f) with the weights' digest in the
    ``organism.json`` of the weights in use (``$SASA_ORGANISM`` or the packaged ones), which
    ``sasa demo`` then uses; the analysis profile (its per-block curves) is kept with them."""
    from sasa.models.loading import load_model
    from sasa.zoo import organism

    cfg = cfg or MeasureConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model("sasa-organism", device="auto")
    analysis, _, _ = organism_analysis(loaded.adapter, out, cfg, "sasa-organism", progress, pair_map_step=pair_map_step)
    sel = analysis["selection"]
    path = organism.record_layers(sel["safety"], sel["fused"], reason=sel["reason"],
                                  profile=out / "analysis" / "profile.json")
    return {"s": sel["safety"], "f": sel["fused"], "reason": sel["reason"], "organism": str(path),
            "report": analysis["paths"].get("html"), "pair_map": analysis.get("pair_map")}


def measure_organism(figstep: str | Path, xstest: str | Path, out: str | Path, cfg: MeasureConfig | None = None,
                     model: str = "sasa-organism", progress: bool = True) -> dict[str, Any]:
    """Run the whole measurement; writes ``measurement.json`` and the evaluation report under ``out``."""
    from sasa.data.pages import page_samples
    from sasa.data.splits import subsample
    from sasa.evaluation.runner import Evaluation
    from sasa.engine.layers import LayerSelection
    from sasa.models.loading import load_model
    from sasa.evaluation.pipeline import run_pipeline

    cfg = cfg or MeasureConfig()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model, device="auto")
    adapter = loaded.adapter
    fig = load("figstep", figstep, variant="all").samples
    fig_text = subsample([s for s in fig if s.image is None], limit=cfg.limit, seed=cfg.seed)
    fig_image = subsample([s for s in fig if s.image is not None], limit=cfg.limit, seed=cfg.seed)
    xs_text = subsample(load("xstest", xstest, variant="safe").samples, limit=cfg.limit, seed=cfg.seed)
    xs_pages = page_samples(xs_text, out / "pages" / "xstest", progress=progress)

    evaluation = Evaluation(adapter, out / "eval", batch_size=cfg.batch_size,
                            max_new_tokens=cfg.max_new_tokens, progress=progress)
    records = evaluation.run(fig_text + fig_image + xs_text + xs_pages, ["vanilla"])
    ids = lambda xs: {s.id for s in xs}
    behaviour = {
        "text_harmful_refusal": rate(records, ids(fig_text)),
        "image_harmful_refusal": rate(records, ids(fig_image)),
        "xstest_safe_text_over_refusal": rate(records, ids(xs_text)),
        "xstest_safe_page_over_refusal": rate(records, ids(xs_pages)),
    }
    behaviour["by_category"] = {"text": rate_by_category(records, ids(fig_text)),
                                "image": rate_by_category(records, ids(fig_image))}
    log.info("behaviour: %s", behaviour)
    reading = {"token_accuracy": reading_accuracy(
        adapter, cfg.reading_pages if cfg.limit is None else min(cfg.reading_pages, cfg.limit), cfg.seed)}
    transcribe = transcription_samples(fig_image)
    said = Evaluation(adapter, out / "transcribe", batch_size=cfg.batch_size, max_new_tokens=cfg.transcribe_tokens,
                      progress=progress).run(transcribe, ["vanilla"])
    reading["transcription"] = transcription_scores(said, transcribe)
    log.info("reading: %s", reading)

    analysis, train, val = organism_analysis(adapter, out, cfg, model, progress)
    s, f = analysis["selection"]["safety"], analysis["selection"]["fused"]
    test = fig_image + xs_pages
    share = random.Random(cfg.seed)
    subset = [x for x in test if share.random() < cfg.generating_share]
    modes = list(cfg.scoring_modes) + list(cfg.generating_modes)
    run_info = {"model": model, "layers": {"s": s, "f": f, "indexing": "0-based", "reason": analysis["selection"]["reason"]},
                "behaviour": behaviour, "reading": reading,
                "data": {"train_pages": len(train), "val_pages": len(val), "figstep_images": len(fig_image),
                         "figstep_text": len(fig_text), "xstest_safe": len(xs_text),
                         "generating_modes_on": len(subset)},
                "config": asdict(cfg)}
    run = run_pipeline(adapter, test, modes, out / "eval", train=train, val=val, selection=LayerSelection(s, f),
                       target_fpr=cfg.target_fpr, only={m: subset for m in cfg.generating_modes},
                       evaluation=evaluation, title=f"SASA on {model}: FigStep images + XSTest-safe pages",
                       seed=cfg.seed, batch_size=cfg.batch_size, model_name=model, progress=progress,
                       run_info=lambda records, ev, fit_info: {**run_info, "detectors": fit_info})
    run_info = run.summary["run"]
    run_info["seconds"] = round(time.perf_counter() - started, 1)
    result = {"run": run_info, "summary": run.summary}
    atomic_write_json(out / "measurement.json", result)
    return result


def headline(result: dict[str, Any]) -> str:
    """The measurement as plain text: behaviour, reading, (s, f), then one row per mode."""
    from sasa.report.headline import headline as mode_table
    from sasa.judge import short_name

    run = result["run"]
    b, r = run["behaviour"], run["reading"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def judged(entry: dict) -> str:
        """Every judge's rate side by side (the primary's alone for runs without per-judge verdicts)."""
        per = entry.get("by_judge") or {}
        if not per:
            return pct(entry["refusal_rate"])
        return " / ".join(f"{pct(v)} ({short_name(j)})" for j, v in per.items())

    text, image = b["text_harmful_refusal"], b["image_harmful_refusal"]
    lines = [
        f"text-harmful refusal (FigStep questions, n={text['n']}): {judged(text)}",
        f"image-harmful refusal (FigStep images, n={image['n']}): {judged(image)}",
        (f"over-refusal XSTest safe: text {judged(b['xstest_safe_text_over_refusal'])}, "
         f"typed pages {judged(b['xstest_safe_page_over_refusal'])}"),
        ("reader token accuracy on held-out pages: " + ", ".join(
            f"{pct(v['accuracy'])} ({k})" for k, v in r["token_accuracy"].items())),
        (f"transcription of the FigStep images: word accuracy {pct(r['transcription']['word_accuracy'])} "
         f"(full page {pct(r['transcription']['word_accuracy_full_page'])}, n={r['transcription']['n']})"),
        f"analysis picked (s, f) = ({run['layers']['s']}, {run['layers']['f']}) [0-based]",
    ]
    cats = b.get("by_category")
    if cats:
        lines += ["", "refusal by FigStep category: text / image"]
        lines += [f"  {c}: {pct(cats['text'][c]['refusal_rate'])} / {pct(cats['image'].get(c, {}).get('refusal_rate'))}"
                  for c in cats["text"]]
    lines += [
        "",
        mode_table(result["summary"], fprs=("0.01", "0.05")),
    ]
    return "\n".join(lines)
