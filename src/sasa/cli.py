"""The ``sasa`` command line: generate, probe fit, analyze, evaluate, demo, judge, bench, models, data."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from sasa.errors import UsageError
from sasa.modes import DEMO_MODES, DETECTOR_MODES, EVAL_MODES, GUARD_MODES, MODES, REFUSAL

# sasa.testing.real_configs.CONFIGS' names, here so the parser needs no torch (a test keeps them equal)
BENCH_CONFIGS = ("llava-1.5-7b", "qwen2-vl-7b", "qwen2.5-vl-7b", "gemma-3-4b")

logger = logging.getLogger("sasa")

DTYPES = ("auto", "float32", "bfloat16", "float16")
PRECISIONS = ("auto", "bf16", "fp32")  # sasa.zoo.organism.PRECISIONS, without importing torch here
CHUNK_PAUSED = 3  # exit code of `sasa zoo build` when a chunk stopped at its time budget
DEFAULT_JUDGES = ("vlguard", "sasa-paper", "xstest")  # sasa.evaluate.DEFAULT_JUDGES, without importing torch here


def list_of(kind: type, length: int | None = None) -> type[argparse.Action]:
    """The one list syntax: ``--layers 13,15`` (``--layers 13 15`` is read the same way)."""

    class CommaList(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            items = [x for v in (values if isinstance(values, list) else [values]) for x in v.split(",") if x.strip()]
            try:
                parsed = [kind(x) for x in items]
            except ValueError:
                parser.error(f"{option_string}: {','.join(items)!r} is not a comma list of {kind.__name__}")
            if length is not None and len(parsed) != length:
                parser.error(f"{option_string} takes {length} values (e.g. 13,15), got {len(parsed)}")
            setattr(namespace, self.dest, parsed)

    return CommaList


def _renamed(old: str, new: str) -> type[argparse.Action]:
    """An option that still answers to its old name for one release, saying so."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string == old:
                sys.stderr.write(f"sasa: {old} is deprecated and will be removed; use {new}\n")
            setattr(namespace, self.dest, values)

    return Renamed


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m",
                   help="hub id, local directory, .gguf file, or smollm2-135m (embedded default)")
    g.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (text models)")
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights' dtype (auto: bf16/fp16 on GPU, fp32 on CPU)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--device-map", default=None,
                   help="shard the model: auto, balanced, sequential, a JSON object {module: device} or a .json file of one")
    g.add_argument("--offload-folder", default=None, help="where a device map's 'disk' modules are kept")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model repo code (off unless asked)")
    g.add_argument("--attn-implementation", default=None, choices=("eager", "sdpa", "flash_attention_2"),
                   help="attention kernel passed to from_pretrained (default: transformers')")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, usually one per core)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SASA")
    g.add_argument("--layers", nargs="+", action=list_of(int, 2), metavar="S,F", default=None,
                   help="safety and fused layer (default: scaled from LLaVA-1.5-7B's 13/15 of 32)")
    g.add_argument("--indexing", choices=("0-based", "1-based"), default="0-based")
    g.add_argument("--profile", default=None,
                   help="model profile from `sasa analyze` (profile.json or its folder): its (s, f) are used "
                        "when --layers is not given; refused for another model")
    g.add_argument("--projection-mode", choices=("replace", "residual", "interpolate"), default="replace")
    g.add_argument("--alpha", type=float, default=1.0, help="coefficient for residual/interpolate")
    g.add_argument("--positions", choices=("all", "text", "image", "last"), default="all")
    g.add_argument("--eps", type=float, default=1e-6)


def _device_map(value: str | None) -> str | dict | None:
    """--device-map: a name transformers knows, or an explicit map as JSON text or a JSON file."""
    if value is None or not (value.lstrip().startswith("{") or value.endswith(".json")):
        return value
    try:
        text = Path(value).read_text(encoding="utf-8") if value.endswith(".json") else value
        mapping = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--device-map {value!r}: not a JSON device map ({exc})") from None
    if not isinstance(mapping, dict):
        raise UsageError(f"--device-map {value!r}: a device map is a JSON object {{module: device}}")
    return mapping


def _load(args: argparse.Namespace) -> Any:
    from sasa.distributed import current_shard, shard_device
    from sasa.models.loading import load_model

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    device = args.device if args.device_map else shard_device(current_shard(), args.device)
    return load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=device,
                      device_map=_device_map(args.device_map), offload_folder=args.offload_folder,
                      trust_remote_code=args.trust_remote_code,
                      attn_implementation=args.attn_implementation)


def _profile(adapter: Any, args: argparse.Namespace) -> Any:
    """The --profile, checked against the loaded model (a profile for another model is an error)."""
    if not getattr(args, "profile", None):
        return None
    from sasa.analysis.profile import ModelProfile

    return ModelProfile.from_pretrained(args.profile, expect_fingerprint=adapter.fingerprint())


def _selection(adapter: Any, args: argparse.Namespace) -> Any:
    """(s, f): --layers if given, else the --profile's, else the default scaled from LLaVA-1.5-7B."""
    from sasa.layers import LayerSelection, default_layers

    profile = _profile(adapter, args)
    if args.layers:
        if profile is not None:
            logger.info("--layers %s %s given: the profile's (s, f) = (%d, %d) are not used", *args.layers,
                        profile.safety, profile.fused)
        return LayerSelection(args.layers[0], args.layers[1], args.indexing)
    if profile is not None:
        logger.info("layers from profile %s: (s, f) = (%d, %d), %s", args.profile, profile.safety, profile.fused,
                    profile.indexing)
        return profile.selection()
    return default_layers(adapter.num_layers)


def _engine(adapter: Any, args: argparse.Namespace, features: Any = None) -> Any:
    from sasa.engine import SASAEngine
    from sasa.projection import ProjectionConfig

    sel = _selection(adapter, args)
    proj = ProjectionConfig(args.projection_mode, args.alpha, args.eps, args.positions)
    return SASAEngine(adapter, sel, proj, features)


def _samples(args: argparse.Namespace) -> list:
    from sasa.data.sample import Sample, read_manifest

    if getattr(args, "prompt", None):
        return [Sample(id=f"prompt-{i}", prompt=p, image=args.image) for i, p in enumerate(args.prompt)]
    if args.data == "builtin":
        from sasa.data.registry import builtin_dataset

        samples = list(builtin_dataset())
    elif not args.data:
        raise UsageError("give --data MANIFEST.jsonl (or --prompt TEXT)")
    else:
        samples = read_manifest(args.data, on_error=getattr(args, "on_error", "raise"))
    return samples


def _first(samples: list, limit: int | None, per_label: bool = False) -> list:
    """--limit: the first ``limit`` samples, or (``per_label``) the first half of it from each label."""
    if not limit:
        return samples
    if not per_label:
        return samples[:limit]
    half = -(-limit // 2)
    keep = {id(s) for label in ("harmful", "benign") for s in [x for x in samples if x.label == label][:half]}
    return [s for s in samples if id(s) in keep]


def _check_inputs(args: argparse.Namespace) -> None:
    """What can be checked before the model loads (which can take minutes): the data file, the
    detector directory, and a mode that needs a detector."""
    data = getattr(args, "data", None)
    if data and data != "builtin" and not getattr(args, "prompt", None) and not Path(data).is_file():
        raise UsageError(f"--data {data}: no such file")
    for flag in ("detector", "baseline_detector"):
        path = getattr(args, flag, None)
        if path and not Path(path).exists():
            raise UsageError(f"--{flag.replace('_', '-')} {path}: not found (a directory from `sasa probe fit`)")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")


def cmd_generate(args: argparse.Namespace) -> int:
    from sasa.guard import Guard
    from sasa.probe import LinearProbe

    _check_inputs(args)
    if args.mode and MODES[args.mode].detects and not args.detector:
        raise UsageError(f"--mode {args.mode} needs --detector (fit one with `sasa probe fit`)")
    loaded = _load(args)
    adapter = loaded.adapter
    probe = (LinearProbe.from_pretrained(args.detector, expect_fingerprint=adapter.fingerprint())
             if args.detector else None)
    if probe is not None and args.layers:
        raise UsageError("--layers cannot be combined with --detector: a detector only reads the features of the "
                         f"layers it was fitted with ({probe.metadata.get('engine', {}).get('layers')})")
    if probe is not None and _profile(adapter, args) is not None:
        logger.info("--detector given: its own (s, f) %s are used, not the profile's",
                    probe.metadata.get("engine", {}).get("layers"))
    mode = args.mode or ("detect" if probe is not None else "vanilla")
    if MODES[mode].detects and probe is None:
        raise UsageError(f"--mode {mode} needs --probe (fit one with `sasa probe fit`)")
    engine = _engine(adapter, args) if probe is None else None
    guard = Guard(adapter, mode, probe, engine=engine, refusal_message=args.refusal_message,
                  project_decoding=args.project_decoding)
    samples = _first(_samples(args), args.limit)
    if args.out:
        guard.run(samples, args.out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  on_error=args.on_error, retry_errors=args.retry_errors)
        logger.info("wrote %s", args.out)
    else:
        from sasa.features import run_or_skip

        for s in samples:
            for rec in run_or_skip([s], lambda part: guard.records(part, args.max_new_tokens), mode, args.on_error):
                print(json.dumps(rec.to_json(), ensure_ascii=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from sasa.serving import GuardedServer, Limits, ServeConfig
    except ImportError as exc:
        raise UsageError(f"`sasa serve` needs the serving extra: pip install 'sasa[serve]' ({exc})") from None
    from sasa.guard import Guard
    from sasa.probe import LinearProbe

    if MODES[args.mode].detects and not args.detector:
        raise UsageError(f"--mode {args.mode} needs --detector (a directory from `sasa probe fit`)")
    _check_inputs(args)
    loaded = _load(args)
    adapter = loaded.adapter
    probe = LinearProbe.from_pretrained(args.detector, expect_fingerprint=adapter.fingerprint()) if args.detector else None
    engine = _engine(adapter, args) if probe is None else None
    guard = Guard(adapter, args.mode, probe, engine=engine, refusal_message=args.refusal_message)
    limits = Limits(max_body_bytes=args.max_body_mb * 1024 * 1024, max_image_bytes=args.max_image_mb * 1024 * 1024,
                    max_tokens=args.max_tokens, allow_remote_images=args.allow_remote_images)
    api_key = args.api_key or os.environ.get("SASA_API_KEY") or None
    config = ServeConfig(model_name=args.served_model_name or args.model, api_key=api_key,
                         max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         timeout_s=args.timeout, limits=limits, allowed_hosts=tuple(args.allowed_hosts))
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach it can use the model (requests "
                       "must name it in their Host header: --allowed-hosts)", args.host)
    logger.info("serving %s (mode %s) on http://%s:%d", config.model_name, args.mode, args.host, args.port)
    uvicorn.run(GuardedServer(guard, config).app(), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_probe_fit(args: argparse.Namespace) -> int:
    from sasa.distributed import current_shard
    from sasa.engine import FeatureSpec
    from sasa.training import fit_probe

    _check_inputs(args)
    loaded = _load(args)
    features = FeatureSpec(args.feature, not args.no_projection, args.feature_layer)
    engine = _engine(loaded.adapter, args, features)
    samples = _first(_samples(args), args.limit, per_label=True)
    probe, report = fit_probe(engine, samples, target_fpr=args.target_fpr, val_fraction=args.val_fraction,
                              seed=args.seed, batch_size=args.batch_size, standardize=not args.no_standardize,
                              class_weight=None if args.no_class_weight else "balanced", l2=args.l2,
                              model_name=args.model)
    if not current_shard().is_main:  # every process fitted the same probe on the gathered features
        return 0
    out = probe.save_pretrained(args.out)
    print(json.dumps({"detector": str(out), **report}, indent=2))
    return 0


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


def cmd_demo(args: argparse.Namespace) -> int:
    from sasa.demo import run_demo
    from sasa.report.headline import headline

    for flag in ("figstep", "xstest"):
        path = getattr(args, flag)
        if path is not None and not Path(path).exists():
            raise UsageError(f"--{flag} {path}: not found (the benchmark's folder, in its published layout)")
    if args.quick and args.full:
        raise UsageError("--quick and --full exclude each other")
    result = run_demo(args.out, quick=args.quick, full=args.full, seed=args.seed, model=args.model, batch_size=args.batch_size,
                      per_label=args.per_label, figstep=args.figstep, xstest=args.xstest)
    print(headline(result["summary"]))
    print(f"\nreport: {result['html']}\n        {result['markdown']}\nrecords: {Path(args.out) / 'records.jsonl'}"
          f"\n({result['run']['seconds']} s)")
    return 0


def _hiddendetect_config(adapter: Any, args: argparse.Namespace) -> Any:
    """HiddenDetect's options; its layers from --hiddendetect-layers, else from the --profile if it has them."""
    from sasa.detectors import HiddenDetectConfig

    layers = tuple(args.hiddendetect_layers) if args.hiddendetect_layers else None
    profile = _profile(adapter, args)
    if layers is None and profile is not None and profile.hiddendetect_layers is not None:
        layers = profile.hiddendetect_layers
        logger.info("HiddenDetect layers from profile %s: %s", args.profile, layers)
    return HiddenDetectConfig(token_rule=args.hiddendetect_tokens, layer_rule=args.hiddendetect_layer_rule,
                              layers=layers, last_layer=args.hiddendetect_last_layer)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sasa.baselines import AdaShieldConfig, ECSOConfig
    from sasa.data.splits import assign_splits
    from sasa.pipeline import run_pipeline
    from sasa.report.headline import headline

    from sasa.data.sample import unreadable
    from sasa.modes import detectors_needed, parse_modes

    try:
        modes = parse_modes(args.modes)
    except ValueError as exc:
        raise UsageError(f"--modes: {exc}") from None
    _check_inputs(args)
    loaded = _load(args)
    adapter = loaded.adapter
    samples = _samples(args)
    broken = [s for s in samples if unreadable(s)]  # unreadable lines (--on-error skip): error records
    samples = [s for s in samples if not unreadable(s)]
    if args.split_preset:
        samples = assign_splits(samples, args.split_preset)
    test = _first([s for s in samples if s.split in (None, "test")], args.limit) + broken
    needed = detectors_needed(modes)
    given = _given_probes(args)
    fit = [d for d in needed if not given.get(d)]
    judges: list = _judges(args)
    if args.judge_model:
        from sasa.judge import get_judge

        judges.insert(0, get_judge("guard", model_or_path=args.judge_model, trust_remote_code=args.trust_remote_code))
    result = run_pipeline(
        adapter, test, modes, args.out, train=[s for s in samples if s.split == "train"],
        val=[s for s in samples if s.split == "val"], given=given,
        selection=_selection(adapter, args) if fit else None, target_fpr=args.target_fpr,
        hiddendetect=_hiddendetect_config(adapter, args) if "hiddendetect" in fit else None,
        augment_engine=lambda det: det["detect"].engine if "detect" in det else _engine(adapter, args), judges=judges,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        evaluation_options={"adashield": AdaShieldConfig(args.adashield_placement),
                            "ecso": ECSOConfig(check=args.ecso_check, parse=args.ecso_parse)},
        title=f"SASA evaluation: {args.model}", n_boot=args.n_boot, model_name=args.model,
        on_error=args.on_error, retry_errors=args.retry_errors)
    if result is None:  # a data-parallel worker: the main process merged every shard's records and reports them
        return 0
    errors = [r for r in result.records if r.get("decision") == "error"]
    if errors:
        logger.warning("%d records are errors (ids: %s); see records.jsonl", len(errors),
                       ", ".join(sorted({r["id"] for r in errors})[:10]))
    print(headline(result.summary))
    print(f"\nreport: {result.paths['html']}")
    return 0


def _given_probes(args: argparse.Namespace) -> dict[str, Any]:
    """The fitted probe directories given on the command line, by the mode they serve."""
    return {"detect": args.detector, "probe-noproj": args.baseline_detector}


def _detectors(args: argparse.Namespace, adapter: Any, samples: list, needed: list[str]) -> dict:
    """The detectors ``needed`` (:func:`sasa.training.assemble_detectors`): --detector /
    --baseline-detector where given, the rest fitted on the data's train/val splits."""
    from sasa.training import assemble_detectors

    given = _given_probes(args)
    needs_fit = [d for d in needed if not given.get(d)]
    detectors, _ = assemble_detectors(
        adapter, needed, [s for s in samples if s.split == "train"], [s for s in samples if s.split == "val"], given,
        selection=_selection(adapter, args) if needs_fit else None, target_fpr=args.target_fpr,
        batch_size=args.batch_size, model_name=args.model,
        hiddendetect=_hiddendetect_config(adapter, args) if "hiddendetect" in needs_fit else None)
    return detectors


def cmd_attack(args: argparse.Namespace) -> int:
    from sasa.attack import AttackConfig, run_attack
    from sasa.attack.table import format_table, robustness_table
    from sasa.data.sample import unreadable
    from sasa.data.splits import assign_splits

    names = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in names if d not in DETECTOR_MODES]
    if unknown or not names:
        raise UsageError(f"--detectors: unknown {unknown}; choose from {', '.join(DETECTOR_MODES)}")
    try:
        cfg = AttackConfig(step=args.step_size, steps=args.steps, random_start=not args.no_random_start,
                           seed=args.seed, keep=args.keep, weight=args.keep_weight)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if any(e < 0 for e in args.epsilons):
        raise UsageError("--epsilons must be >= 0 (0-255 units)")
    _check_inputs(args)
    adapter = _load(args).adapter
    if not adapter.spec.takes_images:
        raise UsageError(f"--model {args.model} is a text-only model: there are no pixels to attack")
    samples = [s for s in _samples(args) if not unreadable(s)]
    if args.split_preset:
        samples = assign_splits(samples, args.split_preset)
    targets = _first([s for s in samples if s.split in (None, "test") and s.is_harmful and s.image is not None],
                     args.limit)
    if not targets and not args.nuisance:
        raise ValueError("no harmful test sample with an image to attack")
    detectors = _detectors(args, adapter, samples, names)
    if args.nuisance:
        return _nuisance(args, adapter, samples, {d: detectors[d] for d in names})
    records = run_attack(adapter, {d: detectors[d] for d in names}, targets, args.epsilons, args.out, cfg,
                         batch_size=args.batch_size)
    print(format_table(robustness_table(records)))
    return 0


def _nuisance(args: argparse.Namespace, adapter: Any, samples: list, detectors: dict) -> int:
    """``sasa attack --nuisance``: the detectors' flag rates on the test split's harmful text requests,
    the same with their trigger words swapped, and the benign ones with and without alarming words
    (``meta.contrast``), as text and, for an image model, typed on pages."""
    from sasa.atomic import atomic_write_json
    from sasa.attack.nuisance import defused, nuisance_table

    test = [s for s in samples if s.split in (None, "test") and s.image is None]
    harmful = _first([s for s in test if s.is_harmful], args.limit)
    benign = [s for s in test if s.label == "benign"]
    sets = {"harmful": harmful, "harmful, trigger words swapped": defused(harmful),
            "benign with alarming words": _first([s for s in benign if s.meta.get("contrast")], args.limit),
            "benign without": _first([s for s in benign if not s.meta.get("contrast")], args.limit)}
    if adapter.spec.takes_images:
        from sasa.data.render import page_samples

        sets.update({f"{k} (pages)": page_samples(v, Path(args.out) / "pages") for k, v in list(sets.items())})
    table = nuisance_table(detectors, sets, batch_size=args.batch_size)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "nuisance.json", table)
    print("| detector | set | n | flagged [95 % CI] | mean score |\n| --- | --- | ---: | --- | ---: |")
    for name, rows in table.items():
        for set_name, r in rows.items():
            lo, hi = r["flagged_ci"]
            print(f"| {name} | {set_name} | {r['n']} | {100 * r['flagged']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] "
                  f"| {r['mean_score']:.3f} |")
    return 0


def _judges(args: argparse.Namespace) -> list:
    """``--judges`` built, the ``--llm-judge-*`` options going to the model judges (``llm:MODEL``)."""
    from sasa.judge import get_judge
    from sasa.judge.registry import LLM_PREFIXES

    out = []
    for name in (n.strip() for n in args.judges.split(",")):
        if not name:
            continue
        if name.lower().startswith(LLM_PREFIXES):
            out.append(get_judge(name, batch_size=args.llm_judge_batch_size, xstest_parse=args.llm_judge_parse,
                                 max_new_tokens=args.llm_judge_max_new_tokens))
        else:
            out.append(get_judge(name))
    return out


def _add_llm_judge_options(p: argparse.ArgumentParser) -> None:
    from sasa.judge.llm import XSTEST_PARSES

    p.add_argument("--llm-judge-max-new-tokens", type=int, default=None,
                   help="tokens a model judge may write (default: the template's: xstest 16, strongreject 512)")
    p.add_argument("--llm-judge-parse", choices=XSTEST_PARSES, default="class-name",
                   help="how an xstest-template answer is read (class-name: the authors' labels)")
    p.add_argument("--llm-judge-batch-size", type=int, default=8)


def cmd_judge_validate(args: argparse.Namespace) -> int:
    from sasa.judge.validate import format_table, read_labelled, validate_judges, write_validation

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
        from sasa.analysis.pairmap import pick_stability
        from sasa.atomic import atomic_write_json

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


def cmd_zoo(args: argparse.Namespace) -> int:
    from sasa.zoo import organism

    if args.zoo_command == "build":
        cfg = (organism.BuildConfig.quick() if args.quick else organism.BuildConfig.long_reading()
               if args.recipe == "long-reading" else organism.BuildConfig())
        if args.forms_per_prompt is not None:
            cfg.refusal = replace(cfg.refusal, forms_per_prompt=args.forms_per_prompt)
        if args.precision is not None:
            cfg = cfg.with_precision(args.precision)
        from sasa.cache import cache_dir
        from sasa.zoo.chunks import Chunking, ChunkPaused

        stages = tuple(x.strip() for x in args.stages.split(",") if x.strip())
        chunking = Chunking(cache_dir() / "organism-build", every_s=60 * args.checkpoint_minutes,
                            stop_after_s=60 * args.chunk_minutes if args.chunk_minutes else None)
        try:
            out = organism.build(args.out, cfg, stages=stages, chunking=chunking)
        except ChunkPaused as paused:
            print(f"chunk done: {paused}")
            return CHUNK_PAUSED
        print(f"organism weights: {out}  (load with SASA_ORGANISM={out} and model 'sasa-organism')")
        return 0
    from sasa.zoo.measure import MeasureConfig, measure_organism, record_organism_layers
    from sasa.zoo.measure import headline as measure_headline

    if args.zoo_command == "record":
        given = {"batch_size": args.batch_size} if args.batch_size is not None else {}
        rec = record_organism_layers(args.out, MeasureConfig(limit=args.limit or None, **given),
                                     pair_map_step=args.pair_map_step)
        print(f"recorded (s, f) = ({rec['s']}, {rec['f']}) [0-based] in {rec['organism']}\n{rec['reason']}"
              f"\nanalysis report: {rec['report']}")
        return 0

    if args.zoo_command in ("stages", "heldout"):
        from sasa.zoo.stages import StagesConfig, measure_stages, stage_table

        figstep, xstest = (args.figstep, args.xstest) if args.zoo_command == "stages" else (None, None)
        result = measure_stages(figstep, xstest, args.out, args.weights,
                                StagesConfig(limit=args.limit or None))
        print(stage_table(result))
        for variant in ("without-visual", "with-visual"):
            pa = result[variant]["benign_page_answers"]
            print(f"{variant}: benign held-out pages answered {100 * pa['answered_on_page']:.1f}% (as text "
                  f"{100 * pa['answered_as_text']:.1f}%), answer word similarity {100 * pa['word_similarity']:.1f}%"
                  f" (n={pa['n']})")
        if figstep is not None:
            from sasa.judge import short_name
            from sasa.zoo.stages import phenomenon

            ph = phenomenon(result["with-visual"])
            for judge, v in ph.items():
                if judge != "reads":
                    print(f"phenomenon ({short_name(judge)}): reads {ph['reads']}, text {100 * v['text']:.1f}%, "
                          f"images {100 * v['image']:.1f}%, gap {100 * v['gap']:.1f} points -> "
                          f"{'present' if v['present'] else 'absent'}")
        print(f"\nstages: {Path(args.out) / 'stages.json'} ({result['seconds']} s)")
        return 0

    given = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    cfg = MeasureConfig(limit=args.limit or None, **{k: v for k, v in given.items() if v is not None})
    result = measure_organism(args.figstep, args.xstest, args.out, cfg)
    print(measure_headline(result))
    if args.record:
        layers = result["run"]["layers"]
        path = organism.record_layers(layers["s"], layers["f"], reason=layers["reason"],
                                      profile=Path(args.out) / "analysis" / "profile.json")
        print(f"recorded (s, f) = ({layers['s']}, {layers['f']}) in {path}")
    print(f"\nmeasurement: {Path(args.out) / 'measurement.json'}\nreport: {Path(args.out) / 'eval' / 'report.html'}"
          f"\n({result['run']['seconds']} s)")
    return 0


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
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a first try: only the first N samples (generate), N test samples (evaluate) or "
                        "N/2 of each label (probe fit)")
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
    f.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a first try: only the first N samples (generate), N test samples (evaluate) or "
                        "N/2 of each label (probe fit)")
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
    e.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a first try: only the first N samples (generate), N test samples (evaluate) or "
                        "N/2 of each label (probe fit)")
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
    zb.add_argument("--recipe", choices=("committed", "long-reading"), default="committed",
                    help="committed: the settings of the committed weights; long-reading: a long float32 "
                         "visual stage (~8 h on 2 cores; run it with --chunk-minutes)")
    zb.add_argument("--chunk-minutes", type=float, default=None,
                    help="stop a training stage after this long (checkpointed; the same command continues it; "
                         f"exit code {CHUNK_PAUSED})")
    zb.add_argument("--checkpoint-minutes", type=float, default=5.0,
                    help="how often a training stage writes its checkpoint (in the sasa cache)")
    zb.add_argument("--forms-per-prompt", type=int, default=None,
                    help="refusal data: each request in this many balanced forms (default 2; 1 = as written)")
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
        p.set_defaults(func=cmd_zoo)

    try:
        from sasa.data.cli import add_data_commands
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
        from sasa.data.cli import run_data_command

        return run_data_command(args)
    from sasa.layers import LayerSelectionError

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
