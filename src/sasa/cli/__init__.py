"""The ``sasa`` command line: generate, probe fit, analyze, evaluate, demo, judge, bench, models, data."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from sasa.cli.common import (
    _add_engine_args,
    _add_llm_judge_options,
    _add_model_args,
    _device_map,
    _hiddendetect_config,
    _renamed,
    list_of,
)
from sasa.cli.run import (
    cmd_attack,
    cmd_demo,
    cmd_evaluate,
    cmd_generate,
    cmd_probe_fit,
    cmd_serve,
)
from sasa.cli.study import (
    BENCH_CONFIGS,
    cmd_analyze,
    cmd_bench,
    cmd_judge_list,
    cmd_judge_validate,
    cmd_models,
)
from sasa.cli.zoo import CHUNK_PAUSED, cmd_zoo
from sasa.errors import UsageError
from sasa.guard.modes import (
    DEMO_MODES,
    DETECTOR_MODES,
    EVAL_MODES,
    GUARD_MODES,
    REFUSAL,
)
from sasa.judge.registry import DEFAULT_JUDGES
from sasa.zoo.organism import PRECISIONS

__all__ = ["CHUNK_PAUSED", "UsageError", "build_parser", "main", "_device_map", "_hiddendetect_config"]

logger = logging.getLogger("sasa")


class _DefaultsParser(argparse.ArgumentParser):
    """Every sub-command's --help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give every option with a default a help text, so that --help shows the default (argparse
    prints defaults only beside help texts)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)
        elif action.option_strings and action.help is None and action.default not in (None, argparse.SUPPRESS):
            action.help = "(default: %(default)s)"


def _add_first_try(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a first try: only the first N samples (generate), N test samples (evaluate) or "
                        "N/2 of each label (probe fit)")


def build_parser() -> argparse.ArgumentParser:
    import sasa

    parser = argparse.ArgumentParser(prog="sasa", description="Self-Aware Safety Augmentation for (vision-)language models",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"sasa {sasa.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_DefaultsParser)

    g = sub.add_parser("generate", help="guarded generation over a manifest or prompts, streaming JSONL")
    _add_model_args(g)
    _add_engine_args(g)
    g.add_argument("--mode", choices=GUARD_MODES, default=None,
                   help="default: detect with --detector, else vanilla")
    g.add_argument("--detector", "--probe", default=None, action=_renamed("--probe", "--detector"),
                   help="detector directory from `sasa probe fit` (--probe: the old name, deprecated)")
    g.add_argument("--data", default=None, help="JSONL manifest, or 'builtin'")
    _add_first_try(g)
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable) instead of --data")
    g.add_argument("--image", default=None, help="image for --prompt")
    g.add_argument("--out", default=None, help="output JSONL (resumable); stdout if omitted")
    g.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="skip: record a sample that cannot be run (its id and the reason) and go on")
    g.add_argument("--retry-errors", action="store_true",
                   help="with --out: run again the samples recorded as errors (fix the input first)")
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--refusal-message", default=REFUSAL)
    g.add_argument("--project-decoding", action="store_true",
                   help="augment modes: project generated tokens too (greedy), not only the prompt")
    g.set_defaults(func=cmd_generate)

    sv = sub.add_parser("serve", help="an OpenAI-compatible chat server with the guard in front of the model")
    _add_model_args(sv)
    _add_engine_args(sv)
    sv.add_argument("--detector", default=None, help="detector directory from `sasa probe fit` (detect modes)")
    sv.add_argument("--mode", choices=GUARD_MODES, default="detect")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--served-model-name", default=None, help="the model name clients send (default: --model)")
    sv.add_argument("--api-key", default=None, help="required as 'Authorization: Bearer KEY' on every route but "
                                                     "/health and the page / (default: $SASA_API_KEY, else none)")
    sv.add_argument("--max-batch-size", type=int, default=8, help="requests decoded together at most")
    sv.add_argument("--max-wait-ms", type=float, default=10.0, help="how long the first request waits for company")
    sv.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond which the server answers 429")
    sv.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take, queue included")
    sv.add_argument("--max-tokens", type=int, default=256, help="the most new tokens a request may ask for")
    sv.add_argument("--max-body-mb", type=int, default=20)
    sv.add_argument("--max-image-mb", type=int, default=10)
    sv.add_argument("--allow-remote-images", action="store_true",
                    help="fetch http(s) image URLs (off: only data: URLs, no server-side fetches)")
    sv.add_argument("--allowed-hosts", nargs="*", default=[], metavar="NAME",
                    help="without --api-key, Host names served besides the bound address and localhost "
                         "('*': any; DNS-rebinding pages are refused by this check)")
    sv.add_argument("--refusal-message", default=REFUSAL)
    sv.set_defaults(func=cmd_serve)

    p = sub.add_parser("probe", help="linear probe commands")
    psub = p.add_subparsers(dest="probe_command", required=True)
    f = psub.add_parser("fit", help="fit and calibrate a probe on a labelled manifest")
    _add_model_args(f)
    _add_engine_args(f)
    f.add_argument("--data", required=True, help="labelled JSONL manifest, or 'builtin'")
    _add_first_try(f)
    f.add_argument("--out", required=True, help="detector directory (probe.safetensors, config.json, README.md model card)")
    f.add_argument("--feature", choices=("logits", "hidden"), default="logits")
    f.add_argument("--feature-layer", type=int, default=None, help="0-based block for --feature hidden")
    f.add_argument("--no-projection", action="store_true", help="features from the plain forward (baseline)")
    f.add_argument("--target-fpr", type=float, default=0.05)
    f.add_argument("--val-fraction", type=float, default=0.25)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument("--l2", type=float, default=1e-2)
    f.add_argument("--no-standardize", action="store_true")
    f.add_argument("--no-class-weight", action="store_true")
    f.set_defaults(func=cmd_probe_fit)

    d = sub.add_parser("demo", help="the main job: fit and evaluate SASA offline on the embedded default")
    d.add_argument("--quick", action="store_true", help="small splits (24/16/16 per label) and short answers")
    d.add_argument("--full", action="store_true",
                   help="every training and validation page, 120 test prompts per label, 64-token answers (the "
                        "default run: 40/32/50 per label, 48 tokens, sized for ten minutes on two CPU cores)")
    d.add_argument("--per-label", type=int, default=None, metavar="N",
                   help="cap every split at N prompts per label (a smoke run of the whole pipeline)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--model", default="sasa-organism", help="sasa-organism (default), smollm2-135m or any model")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--figstep", default=None, metavar="DIR",
                   help="FigStep's folder (safebench.csv + images/SafeBench/): its 500 images with FigStep's prompt "
                        "join the test set as harmful items")
    d.add_argument("--xstest", default=None, metavar="DIR",
                   help="XSTest's folder (xstest_prompts.csv): its safe prompts, on pages, join the test set as benign")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("evaluate", help="every mode and baseline on the same samples; records, summary, report")
    _add_model_args(e)
    _add_engine_args(e)
    e.add_argument("--data", required=True, help="JSONL manifest (with splits, or all test), or 'builtin'")
    _add_first_try(e)
    e.add_argument("--split-preset", default=None, help="assign splits first: unseen-families, builtin, ...")
    e.add_argument("--modes", default=",".join(DEMO_MODES), help="comma list of " + ",".join(EVAL_MODES))
    e.add_argument("--detector", "--probe", default=None, action=_renamed("--probe", "--detector"),
                   help="SASA detector directory (else fitted on the train/val splits; --probe: the old name, "
                        "deprecated)")
    e.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="skip: record a sample that cannot be run (its id and the reason) and go on")
    e.add_argument("--retry-errors", action="store_true",
                   help="run again the samples recorded as errors in --out (fix the input first)")
    e.add_argument("--baseline-detector", "--baseline-probe", default=None,
                   action=_renamed("--baseline-probe", "--baseline-detector"),
                   help="no-projection detector directory (else fitted likewise; --baseline-probe: the old name, "
                        "deprecated)")
    e.add_argument("--judges", default=",".join(DEFAULT_JUDGES),
                   help="comma list of refusal judges, the first primary (see `sasa judge list`); each bare list "
                        "name is its published check, LIST-smart / LIST-strict the project's variants; "
                        "llm:MODEL / llm-strongreject:MODEL a local model with a published judge prompt")
    _add_llm_judge_options(e)
    e.add_argument("--judge-model", default=None,
                   help="a Llama-Guard-style guard model (hub id or path): the primary judge, before --judges")
    g = e.add_argument_group("baselines (defaults: the authors' code; see docs/baselines-and-judges.md)")
    g.add_argument("--hiddendetect-layers", nargs="+", action=list_of(int, 2), metavar="S,E", default=None,
                   help="HiddenDetect's inclusive 0-based block range (default: the profile's, else the official "
                        "scripts' for a model they name, else the layer rule)")
    g.add_argument("--hiddendetect-layer-rule", choices=("above-last", "positive-run"), default="above-last")
    g.add_argument("--hiddendetect-tokens", choices=("first", "all-subtokens"), default="first")
    g.add_argument("--hiddendetect-last-layer", choices=("hf", "block"), default="hf")
    g.add_argument("--adashield-placement", choices=("sandwich", "cogvlm", "append"), default="sandwich")
    g.add_argument("--ecso-check", choices=("official", "response-only"), default="official")
    g.add_argument("--ecso-parse", choices=("exact", "startswith"), default="exact")
    e.add_argument("--target-fpr", type=float, default=0.05)
    e.add_argument("--out", required=True, help="run directory (resumable)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-new-tokens", type=int, default=64)
    e.add_argument("--n-boot", type=int, default=1000)
    e.set_defaults(func=cmd_evaluate)

    at = sub.add_parser("attack", help="PGD on the images of harmful test samples against the detectors: "
                                       "their detection rate under each L-inf budget")
    _add_model_args(at)
    _add_engine_args(at)
    at.add_argument("--data", required=True, help="JSONL manifest (harmful samples with images are attacked)")
    at.add_argument("--split-preset", default=None, help="assign splits first: unseen-families, builtin, ...")
    at.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images to attack")
    at.add_argument("--detectors", default=",".join(DETECTOR_MODES),
                    help="comma list of the detectors to attack (fitted on the train/val splits unless given)")
    at.add_argument("--detector", default=None, help="SASA detector directory (else fitted)")
    at.add_argument("--baseline-detector", default=None, help="no-projection detector directory (else fitted)")
    at.add_argument("--epsilons", nargs="+", action=list_of(float), default=[0.0, 2.0, 4.0, 8.0, 16.0],
                    metavar="E", help="L-inf budgets in 0-255 units (8 = 8/255)")
    at.add_argument("--steps", type=int, default=50)
    at.add_argument("--step-size", type=float, default=1.0, help="0-255 units")
    at.add_argument("--no-random-start", action="store_true", help="start from the clean image")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--keep", choices=("transcription", "answer", "none"), default="transcription",
                    help="what the attacked image must still do: be read as its request (the text typed on it), "
                         "or lead to an answer's opening")
    at.add_argument("--keep-weight", type=float, default=0.1, help="lambda, the keep term's weight")
    at.add_argument("--nuisance", action="store_true",
                    help="no attack: the detectors' flag rates on harmful requests with their trigger words swapped "
                         "and on benign ones with alarming words (meta.contrast), beside the plain sets, as text "
                         "and on pages (nuisance.json)")
    at.add_argument("--defence", choices=("none", "adversarial"), default="none",
                    help="adversarial: also attack each probe refitted on its training images attacked against it "
                         "(OUT/defence/), and report every detector's flag rate on the benign test samples")
    at.add_argument("--defence-epsilon", type=float, default=None,
                    help="the budget the training images are attacked at (default: the largest of --epsilons)")
    at.add_argument("--defence-images", type=int, default=None, metavar="N",
                    help="attack a seeded N of the harmful training images for the refit (default: all; each "
                         "costs a full PGD run)")
    g = at.add_argument_group("fitting detectors (as sasa evaluate)")
    g.add_argument("--hiddendetect-layers", nargs="+", action=list_of(int, 2), metavar="S,E", default=None)
    g.add_argument("--hiddendetect-layer-rule", choices=("above-last", "positive-run"), default="above-last")
    g.add_argument("--hiddendetect-tokens", choices=("first", "all-subtokens"), default="first")
    g.add_argument("--hiddendetect-last-layer", choices=("hf", "block"), default="hf")
    at.add_argument("--target-fpr", type=float, default=0.05)
    at.add_argument("--batch-size", type=int, default=4)
    at.add_argument("--out", required=True, help="run directory (attack.jsonl, images/; resumable)")
    at.set_defaults(func=cmd_attack)

    a = sub.add_parser("analyze", help="per-layer safety / semantic / refusal curves and a recommended (s, f)")
    _add_model_args(a)
    a.add_argument("--data", required=True, help="labelled JSONL manifest, or 'builtin'")
    a.add_argument("--out", required=True, help="output folder (resumable): profile.json, analysis.html, plots/")
    a.add_argument("--max-samples", type=int, default=128, help="cap per label (whole groups, seeded); 0 = all")
    a.add_argument("--batch-size", type=int, default=8)
    a.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probes")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--pairs", type=int, default=16,
                   help="FigStep renderings for cross-modal agreement when the data has no image/text pairs")
    a.add_argument("--no-heads", action="store_true", help="skip head ablation (the costliest part)")
    a.add_argument("--pair-map", action="store_true",
                   help="also the (s, f) map: the SASA probe's validation AUROC for every pair on a grid over all "
                        "depths, the pick marked (one plain forward per batch + one pass 2 per pair)")
    a.add_argument("--pair-map-step", type=int, default=None, metavar="K",
                   help="the map's grid stride in blocks (default: about 8 depths)")
    a.add_argument("--stability-seeds", nargs="+", action=list_of(int), default=None, metavar="SEED",
                   help="run the analysis (with the map) once per seed on that seed's draw of --max-samples per "
                        "label, into OUT/seed-N, and report how often each rule's (s, f) agrees (stability.json)")
    a.add_argument("--head-layers", default=None, help="comma list of blocks whose heads to ablate (default all)")
    a.add_argument("--head-heads", default=None, help="comma list of head indices to ablate (default all)")
    a.add_argument("--head-max-samples", type=int, default=16, help="prompts per set (harmful, benign) for ablation")
    r = a.add_argument_group("selection rule (see sasa.analysis.select)")
    r.add_argument("--safety-metric", choices=("probe_dprime", "probe_auroc", "probe_accuracy"), default="probe_dprime")
    r.add_argument("--safety-tolerance", type=float, default=0.05, help="within this share of the peak counts as it")
    r.add_argument("--safety-band", nargs="+", action=list_of(float, 2), default=(0.25, 0.75), metavar="LOW,HIGH",
                   help="share of the depth searched for s")
    r.add_argument("--min-safety-layer", type=int, default=None)
    r.add_argument("--max-safety-layer", type=int, default=None)
    r.add_argument("--top-heads", type=int, default=5, help="s is searched in the blocks of this many top heads")
    r.add_argument("--no-head-rule", action="store_true", help="ignore head ablation when choosing s")
    r.add_argument("--fused-metrics", default="crossmodal_agreement,category_accuracy,readability",
                   help="semantic curves for f, first available wins")
    r.add_argument("--saturation", type=float, default=0.9, help="share of the semantic rise that counts as saturated")
    r.add_argument("--max-gap", type=int, default=None, help="largest f - s allowed")
    a.set_defaults(func=cmd_analyze)

    m = sub.add_parser("models", help="list supported architectures")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="speed benchmark, side by side in one run")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--out", default=None, help="write the figures as JSON here too")
    b.add_argument("--config", nargs="+", action=list_of(str), default=None, metavar="NAME",
                   help="real model shapes instead: " + ",".join(BENCH_CONFIGS) + " (comma list, or all)")
    b.add_argument("--random-weights", action="store_true",
                   help="with --config: random weights of that shape (nothing is downloaded; required)")
    b.add_argument("--size", choices=("reduced", "full"), default=None,
                   help="with --config: widths and depths as published (full) or divided by 4 (reduced); "
                        "default full on a GPU, reduced on CPU")
    b.add_argument("--device", default="auto")
    b.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    b.add_argument("--new-tokens", type=int, default=32, help="with --config: tokens per generation")
    b.add_argument("--batch", type=int, default=4, help="with --config: the batched figures' batch size")
    b.set_defaults(func=cmd_bench)

    jd = sub.add_parser("judge", help="refusal judges: list them, validate them against human labels")
    jsub = jd.add_subparsers(dest="judge_command", required=True)
    jl = jsub.add_parser("list", help="the keyword lists, their published checks and sources")
    jl.set_defaults(func=cmd_judge_list)
    jv = jsub.add_parser("validate", help="judges' agreement with human refusal labels, side by side")
    jv.add_argument("--data", required=True,
                    help="XSTest-v2 completions CSV (prompt, completion, final_label) or JSONL (prompt, response, "
                         "refused)")
    jv.add_argument("--judges", default="sasa-paper,xstest",
                    help="comma list of judge names; llm:MODEL, llm-strongreject:MODEL for a local model judge")
    _add_llm_judge_options(jv)
    jv.add_argument("--out", default=None, help="folder for validation.json, validation.md, verdicts.jsonl")
    jv.add_argument("--n-boot", type=int, default=1000)
    jv.add_argument("--seed", type=int, default=0)
    jv.set_defaults(func=cmd_judge_validate)

    z = sub.add_parser("zoo", help="the model organism: build it, measure the phenomenon and SASA on it")
    zsub = z.add_subparsers(dest="zoo_command", required=True)
    zb = zsub.add_parser("build", help="train the refusal LoRA and the reader from pinned data and seeds")
    zb.add_argument("name", choices=("organism",))
    zb.add_argument("--out", default="organism-build", help="folder for the three weight/metadata files")
    zb.add_argument("--quick", action="store_true", help="a few steps of each stage (pipeline smoke test)")
    zb.add_argument("--stages", default="refusal,reader,visual",
                    help="comma list; later stages read earlier ones' files from --out")
    zb.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="training passes: bf16 autocast (the committed organism's; default), fp32, or auto "
                         "(bf16 only where the CPU has native bfloat16; emulated bf16 is many times slower)")
    zb.add_argument("--recipe", choices=("committed", "long-reading", "gpu-reading", "more-reading"),
                    default="committed",
                    help="committed: the committed refusal and reader stages' settings, with a short 150-step "
                         "visual stage; long-reading: a long float32 visual stage (run it with --chunk-minutes); "
                         "gpu-reading: the long one scaled to a GPU (--steps of 64 pages, bfloat16); "
                         "more-reading: --steps more long-reading steps continuing --out's visual LoRA")
    zb.add_argument("--steps", type=int, default=None,
                    help="gpu-reading / more-reading: visual steps (default 1000 / 150)")
    zb.add_argument("--lr", type=float, default=None,
                    help="gpu-reading / more-reading: visual learning rate (default 1e-3 / 7e-4)")
    zb.add_argument("--page-seed", type=int, default=None,
                    help="more-reading: seed of its fresh pages (default 30000; a further continuation needs "
                         "another, or it sees the same pages again)")
    zb.add_argument("--deadline-minutes", type=float, default=None,
                    help="end the visual stage within this many minutes of the start, annealed by a cooldown of "
                         "a fifth of the run (logged as its ending, so --end-at/--cooldown rebuild it)")
    zb.add_argument("--device", default="cpu", help="train the LoRA stages here (e.g. cuda; default cpu)")
    zb.add_argument("--workers", type=int, default=1,
                    help="processes that draw the visual stage's pages (the same pages for any number)")
    zb.add_argument("--acting", choices=("none", "direct", "heading"), default="none",
                    help="add the acting stage (list `acting` in --stages): the visual LoRA continued on mostly "
                         "benign page answers; heading: each answer first restates the page's heading")
    zb.add_argument("--chunk-minutes", type=float, default=None,
                    help="stop a training stage after this long (checkpointed; the same command continues it; "
                         f"exit code {CHUNK_PAUSED})")
    zb.add_argument("--end-at", type=int, default=None, metavar="STEP",
                    help="end the visual stage at this step of its schedule, annealed by a linear cooldown "
                         "(--cooldown), in a branch started from the full run's checkpoint, which stays to continue")
    zb.add_argument("--cooldown", type=int, default=60, metavar="STEPS",
                    help="with --end-at: the learning rate falls linearly to zero over this many last steps")
    zb.add_argument("--checkpoint-minutes", type=float, default=5.0,
                    help="how often a training stage writes its checkpoint (in the sasa cache)")
    zb.add_argument("--forms-per-prompt", type=int, default=None,
                    help="refusal data: each request in this many balanced forms (default 2; 1 = as written)")
    zb.add_argument("--benign-more-repeat", type=int, default=None, metavar="N",
                    help="refusal data: each training request of the added benign sources (the edge questions) "
                         "N times (default 1, as in the committed build)")
    zb.set_defaults(func=cmd_zoo)
    zm = zsub.add_parser("measure", help="refusal on text vs images, reading, (s, f), SASA and baselines")
    zm.add_argument("name", choices=("organism",))
    zm.add_argument("--figstep", required=True, help="FigStep folder (safebench.csv + images/SafeBench)")
    zm.add_argument("--xstest", required=True, help="XSTest folder or xstest_prompts.csv")
    zm.add_argument("--out", default="runs/organism", help="run folder (resumable)")
    zm.add_argument("--batch-size", type=int, default=None, help="default: MeasureConfig's")
    zm.add_argument("--max-new-tokens", type=int, default=None, help="default: MeasureConfig's (32)")
    zm.add_argument("--limit", type=int, default=0, help="cap every test set (smoke runs); 0 = all")
    zm.add_argument("--record", action="store_true", help="store the chosen (s, f) with the organism's weights")
    zm.set_defaults(func=cmd_zoo)
    zr = zsub.add_parser("record", help="run the analysis on the organism in use and record its (s, f) with its "
                                        "weights (what `sasa demo` uses); the measurement's step 3 alone")
    zr.add_argument("name", choices=("organism",))
    zr.add_argument("--out", default="runs/organism-analysis", help="analysis folder (report, profile)")
    zr.add_argument("--batch-size", type=int, default=None, help="default: MeasureConfig's")
    zr.add_argument("--limit", type=int, default=0, help="cap the analysis pages per label (smoke runs); 0 = all")
    zr.add_argument("--pair-map-step", type=int, default=None, metavar="K",
                    help="also the (s, f) map on a grid of every K-th block (in the analysis report)")
    zr.set_defaults(func=cmd_zoo)
    zs = zsub.add_parser("stages", help="the recipe measured after each stage (refusal backbone, + reader, "
                                        "+ visual LoRA): one table")
    zs.add_argument("name", choices=("organism",))
    zs.add_argument("--figstep", required=True, help="FigStep folder (safebench.csv + images/SafeBench)")
    zs.add_argument("--xstest", required=True, help="XSTest folder or xstest_prompts.csv")
    zh = zsub.add_parser("heldout", help="only the held-out checks of `stages` (the refusal data's held-out "
                                         "split in every form, benign pages vs text): compares builds, no FigStep/XSTest")
    zh.add_argument("name", choices=("organism",))
    for p in (zs, zh):
        p.add_argument("--weights", default=None, help="a build folder (default: the committed organism)")
        p.add_argument("--out", default=f"runs/organism-{p.prog.split()[-1]}", help="run folder (resumable)")
        p.add_argument("--limit", type=int, default=0, help="cap every set (smoke runs); 0 = all")
        p.add_argument("--variant", choices=("both", "with-visual", "without-visual"), default="both",
                       help="measure only the organism (with-visual) or only the stages below its visual LoRA")
        p.set_defaults(func=cmd_zoo)

    try:
        from sasa.cli.data import add_data_commands
    except ImportError:
        add_data_commands = None
    if add_data_commands is not None:
        add_data_commands(sub)
    _show_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func") and args.command == "data":
        from sasa.cli.data import run_data_command

        return run_data_command(args)
    from sasa.engine.layers import LayerSelectionError

    try:
        return int(args.func(args) or 0)
    except (UsageError, LayerSelectionError) as exc:  # the command line is wrong
        logger.error("%s", exc)
        return 2
    except (ValueError, OSError, RuntimeError) as exc:  # the run failed: a file, a model, the data
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
