"""The commands that run a model: generate, serve, probe fit, evaluate, demo, attack."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from sasa.cli.common import (
    _check_inputs,
    _given_probes,
    _detector_sources,
    _detectors,
    _engine,
    _first,
    _judges,
    _load,
    _profile,
    _samples,
)
from sasa.errors import UsageError
from sasa.guard.modes import DETECTOR_MODES, MODES

logger = logging.getLogger("sasa")


def cmd_generate(args: argparse.Namespace) -> int:
    from sasa.detector.probe import LinearProbe
    from sasa.guard.generation import Guard

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
        raise UsageError(f"--mode {mode} needs --detector (fit one with `sasa probe fit`)")
    engine = _engine(adapter, args) if probe is None else None
    guard = Guard(adapter, mode, probe, engine=engine, refusal_message=args.refusal_message,
                  project_decoding=args.project_decoding)
    samples = _first(_samples(args), args.limit)
    if args.out:
        guard.run(samples, args.out, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  on_error=args.on_error, retry_errors=args.retry_errors)
        logger.info("wrote %s", args.out)
    else:
        from sasa.engine.samples import run_or_skip

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
    from sasa.detector.probe import LinearProbe
    from sasa.guard.generation import Guard

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
    from sasa.detector.fit import fit_probe
    from sasa.distributed import current_shard
    from sasa.engine import FeatureSpec

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sasa.data.sample import unreadable
    from sasa.data.splits import assign_splits
    from sasa.evaluation.pipeline import run_pipeline
    from sasa.guard.defences import AdaShieldConfig, ECSOConfig
    from sasa.guard.modes import detectors_needed, parse_modes
    from sasa.report.headline import headline

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
    judges: list = _judges(args)
    if args.judge_model:
        from sasa.judge import get_judge

        judges.insert(0, get_judge("guard", model_or_path=args.judge_model, trust_remote_code=args.trust_remote_code))
    result = run_pipeline(
        adapter, test, modes, args.out, **_detector_sources(args, adapter, samples, detectors_needed(modes)),
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


def cmd_attack(args: argparse.Namespace) -> int:
    from sasa.attack import AttackConfig, run_attack
    from sasa.attack.table import format_table, robustness_table, tpr_chart
    from sasa.data.sample import unreadable
    from sasa.store.atomic import atomic_write_text
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
    if args.nuisance and not any(s.split in (None, "test") and s.is_harmful and s.image is None for s in samples):
        raise UsageError("--nuisance measures text requests (and types them on pages itself): the test split "
                         "holds no harmful sample without an image; give a manifest with the text requests")
    detectors = _run_detectors(args, adapter, samples, names)
    if args.nuisance:
        return _nuisance(args, adapter, samples, {d: detectors[d] for d in names})
    attacked = {d: detectors[d] for d in names}
    if args.defence == "adversarial":
        attacked.update(_adversarial_defence(args, samples, attacked, cfg))
    records = run_attack(adapter, attacked, targets, args.epsilons, args.out, cfg, batch_size=args.batch_size)
    table = robustness_table(records)
    atomic_write_text(Path(args.out) / "robustness.svg", tpr_chart(table))
    print(format_table(table))
    return 0


def _run_detectors(args: argparse.Namespace, adapter: Any, samples: list, names: list[str]) -> dict:
    """The detectors of ``sasa attack``: the probes it fits are kept in OUT/detectors/ and reused by a
    rerun of the same run (fitting them is most of a small run's time), which is refused when the
    fitting settings or the train/val samples differ.  With ``--defence adversarial`` their training
    features (a row of vocabulary logits per train/val sample) are kept beside them for the refit."""
    import hashlib

    from sasa.detector.detectors import TrainingFeatures
    from sasa.store.atomic import atomic_write_json

    where = Path(args.out) / "detectors"
    splits = {k: sorted(f"{s.id}\0{s.label}" for s in samples if s.split == k) for k in ("train", "val")}
    settings = {"model": args.model, "layers": args.layers, "indexing": args.indexing, "profile": args.profile,
                "target_fpr": args.target_fpr,
                **{k: hashlib.sha256("\n".join(v).encode()).hexdigest() for k, v in splits.items()}}
    flags = {"detect": "detector", "probe-noproj": "baseline_detector"}  # as _given_probes reads them
    given = {name for name, path in _given_probes(args).items() if path}
    kept = {name: where / name for name in flags}
    reused = set()
    if (where / "fit.json").is_file():
        before = json.loads((where / "fit.json").read_text(encoding="utf-8"))
        if before != settings:
            raise UsageError(f"{args.out} holds detectors fitted under other settings or data ({where / 'fit.json'}); "
                             "use a new --out directory")
        for name, flag in flags.items():
            if name in names and name not in given and (kept[name] / "config.json").is_file():
                setattr(args, flag, str(kept[name]))
                given.add(name)
                reused.add(name)
                logger.info("%s: the probe fitted by an earlier run of %s", name, args.out)
    refit = args.defence == "adversarial"  # the refit reuses the probes' training features
    detectors = _detectors(args, adapter, samples, names, keep_features=refit)
    atomic_write_json(where / "fit.json", settings)
    for name in flags:
        if name not in detectors:
            continue
        features = kept[name] / "training_features.npz"
        if name not in given:
            detectors[name].probe.save_pretrained(kept[name])
            if detectors[name].training_features is not None:
                detectors[name].training_features.save(features)
        elif refit and name in reused and features.is_file() and not (_refit_dir(args, name) / "config.json").is_file():
            detectors[name].training_features = TrainingFeatures.load(features)  # only when the refit is still to do
    return detectors


def _refit_dir(args: argparse.Namespace, name: str) -> Path:
    """Where ``--defence adversarial`` keeps probe ``name`` refitted (reused by a rerun)."""
    return Path(args.out) / "defence" / f"{name}+adv"


def _adversarial_defence(args: argparse.Namespace, samples: list, detectors: dict, cfg: Any) -> dict:
    """``sasa attack --defence adversarial``: each probe refitted on its training images attacked
    against it (kept in OUT/defence/NAME+adv, reused on a rerun; the attacked features in
    OUT/defence/NAME+adv.attacked as they come, so a stopped refit resumes), and every detector's flag rate on
    the benign test samples, the defence's cost (defence.json)."""
    from dataclasses import replace as with_fields

    from sasa.attack.defence import adversarial_refit
    from sasa.detector.detectors import ProbeDetector
    from sasa.detector.probe import LinearProbe
    from sasa.store.atomic import atomic_write_json

    eps = args.defence_epsilon if args.defence_epsilon is not None else max(args.epsilons)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    refitted, reports = {}, {}
    for name, det in detectors.items():
        if not isinstance(det, ProbeDetector):
            continue
        where = _refit_dir(args, name)
        if (where / "config.json").is_file():
            probe = LinearProbe.from_pretrained(where, expect_fingerprint=det.engine.adapter.fingerprint())
            new = ProbeDetector(det.engine, probe, f"{name}+adv")
            adv = probe.metadata["training"]["adversarial"]
            reports[name] = {**probe.metadata.get("validation", {}), "attacked_training_images": adv["images"],
                             "epsilon": adv["epsilon"], "steps": adv["steps"]}
        else:
            new, reports[name] = adversarial_refit(det, train, val, with_fields(cfg, epsilon=float(eps)),
                                                   target_fpr=args.target_fpr, batch_size=args.batch_size,
                                                   images=args.defence_images,
                                                   store=where.with_name(f"{name}+adv.attacked"))
            new.probe.save_pretrained(where)
        refitted[new.name] = new
    if not refitted:
        raise UsageError("--defence adversarial refits probes: include detect or probe-noproj in --detectors")
    benign = [s for s in samples if s.split in (None, "test") and s.label == "benign"]  # all: --limit counts attacked images
    cost = {}
    for name, det in {**detectors, **refitted}.items():
        flags = [bool(x > det.threshold) for x in det.score(benign)] if benign else []
        cost[name] = {"benign_flag_rate": sum(flags) / len(flags) if flags else None, "n": len(flags)}
        print(f"{name}: flags {cost[name]['benign_flag_rate']} of the benign test samples (n={len(flags)})")
    atomic_write_json(Path(args.out) / "defence.json", {"defence": "adversarial", "epsilon": eps,
                                                        "refits": reports, "benign_flag_rate": cost})
    return refitted


def _nuisance(args: argparse.Namespace, adapter: Any, samples: list, detectors: dict) -> int:
    """``sasa attack --nuisance``: the detectors' flag rates on the test split's harmful text requests,
    the same with their trigger words swapped, and the benign ones with and without alarming words
    (``meta.contrast``), as text and, for an image model, typed on pages."""
    from sasa.attack.nuisance import defused, nuisance_table
    from sasa.store.atomic import atomic_write_json

    test = [s for s in samples if s.split in (None, "test") and s.image is None]
    harmful = _first([s for s in test if s.is_harmful], args.limit)
    benign = [s for s in test if s.label == "benign"]
    sets = {"harmful": harmful, "harmful, trigger words swapped": defused(harmful),
            "benign with alarming words": _first([s for s in benign if s.meta.get("contrast")], args.limit),
            "benign without": _first([s for s in benign if not s.meta.get("contrast")], args.limit)}
    if adapter.spec.takes_images:
        from sasa.data.pages import page_samples

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
