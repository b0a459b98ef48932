"""The commands that study models and judges: analyze, bench, judge, models."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sasa.cli.common import _judges, _load, _samples
from sasa.errors import UsageError
from sasa.testing.real_configs import CONFIGS

logger = logging.getLogger("sasa")
BENCH_CONFIGS = tuple(CONFIGS)  # the real LVLM shapes `sasa bench --config` builds


def cmd_models(args: argparse.Namespace) -> int:
    from sasa.models.adapters import _REGISTRY
    from sasa.models.sources import source_names

    print("named models (--model NAME, offline):")
    for name in source_names():
        print(f"  {name}")
    print("architectures (--model HUB_ID or a local directory of one of these model types):")
    for name in sorted(_REGISTRY):
        spec = _REGISTRY[name]
        kind = "vision" if spec.takes_images else "text"
        print(f"  {name:14s} {kind:6s} {', '.join(spec.families)}")
    return 0


def cmd_judge_validate(args: argparse.Namespace) -> int:
    from sasa.judge.validate import (
        format_table,
        read_labelled,
        validate_judges,
        write_validation,
    )

    judges = _judges(args)
    if not judges:
        raise UsageError("--judges: give at least one judge name (see `sasa judge list`)")
    items = read_labelled(args.data)
    summary, rows = validate_judges(items, judges, n_boot=args.n_boot, seed=args.seed)
    print(format_table(summary))
    if args.out:
        paths = write_validation(args.out, summary, rows, source=str(args.data))
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['rows']}")
    return 0


def cmd_judge_list(args: argparse.Namespace) -> int:
    from sasa.judge import REFUSAL_LISTS, available_judges

    for name, rl in REFUSAL_LISTS.items():
        print(f"{name:11s} {len(rl.keywords):3d} entries  {rl.published_check()}\n{'':17s}{rl.source}")
    print("\nnames: " + ", ".join(available_judges()))
    print("model judges: llm:MODEL (= llm-xstest:MODEL, XSTest's classification prompt), llm-strongreject:MODEL "
          "(StrongREJECT's rubric); MODEL: a hub id, a folder, a GGUF file or a named model")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from sasa.analysis import AnalysisConfig, SelectionRule, run_analysis

    def ints(text: str | None) -> tuple[int, ...] | None:
        return tuple(int(x) for x in text.split(",") if x.strip()) if text else None

    rule = SelectionRule(safety_metric=args.safety_metric, safety_tolerance=args.safety_tolerance,
                         safety_band=tuple(args.safety_band), use_heads=not args.no_head_rule,
                         top_heads=args.top_heads, min_safety_layer=args.min_safety_layer,
                         max_safety_layer=args.max_safety_layer,
                         fused_metrics=tuple(m.strip() for m in args.fused_metrics.split(",") if m.strip()),
                         saturation=args.saturation, max_gap=args.max_gap)
    cfg = AnalysisConfig(batch_size=args.batch_size, folds=args.folds, seed=args.seed,
                         max_samples=args.max_samples or None, pairs=args.pairs, heads=not args.no_heads,
                         head_layers=ints(args.head_layers), head_heads=ints(args.head_heads),
                         head_max_samples=args.head_max_samples, rule=rule, pair_map=args.pair_map,
                         pair_map_step=args.pair_map_step)
    loaded = _load(args)
    if args.stability_seeds:
        from sasa.analysis.run import pick_stability
        from sasa.store.atomic import atomic_write_json

        stability = pick_stability(loaded.adapter, _samples(args), args.out, args.stability_seeds, cfg,
                                   model_name=args.model)
        atomic_write_json(Path(args.out) / "stability.json", stability)
        for rule, a in stability["agreement"].items():
            print(f"{rule}: (s, f) = {tuple(a['most_common'])} in {a['agree']} of {a['of']} seeds")
        return 0
    result = run_analysis(loaded.adapter, _samples(args), args.out, cfg, model_name=args.model)
    if result is None:  # another process of a data-parallel run: the main one analyses and reports
        return 0
    sel = result["selection"]
    print(f"recommended (s, f) = ({sel['safety']}, {sel['fused']})  [0-based decoder blocks]\n{sel['reason']}")
    if result.get("pair_map"):
        from sasa.analysis.report import pair_map_caption

        print(pair_map_caption(result["pair_map"]))
    print(f"\nprofile: {result['paths']['profile']}\nreport:  {result['paths']['html']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sasa.bench import main as bench_main

    if args.config is None:
        if args.random_weights:
            raise UsageError("--random-weights goes with --config NAME")
        return bench_main(quick=args.quick, repeats=args.repeats, out=args.out)
    from sasa.bench import main_configs
    from sasa.models.loading import resolve_device

    if not args.random_weights:
        raise UsageError("--config builds a model of that shape with random weights: add --random-weights "
                         "(real weights: sasa bench on a loaded model is not offered)")
    names = list(BENCH_CONFIGS) if args.config == ["all"] else args.config
    unknown = [n for n in names if n not in BENCH_CONFIGS]
    if unknown:
        raise UsageError(f"--config: unknown {', '.join(unknown)}; known: {', '.join(BENCH_CONFIGS)}")
    size = args.size or ("full" if resolve_device(args.device).startswith("cuda") else "reduced")
    return main_configs(names, size, args.dtype, args.device, args.repeats, out=args.out,
                        new_tokens=args.new_tokens, batch=args.batch)
