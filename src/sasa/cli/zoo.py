"""``sasa zoo``: build the model organism in resumable chunks, record its (s, f), measure it."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

logger = logging.getLogger("sasa")


CHUNK_PAUSED = 3  # exit code of `sasa zoo build` when a chunk stopped at its time budget


def build_config(args: argparse.Namespace):
    """The BuildConfig ``sasa zoo build``'s options describe."""
    from sasa.zoo import organism

    if args.quick:
        cfg = organism.BuildConfig.quick()
    elif args.recipe in ("gpu-reading", "more-reading"):
        recipe = organism.BuildConfig.gpu_reading if args.recipe == "gpu-reading" else organism.BuildConfig.more_reading
        steps = args.steps or (1000 if args.recipe == "gpu-reading" else 150)
        given = {"lr": args.lr} if args.lr is not None else {}
        if args.page_seed is not None:
            if args.recipe != "more-reading":
                raise SystemExit("--page-seed is an option of --recipe more-reading")
            given["seed"] = args.page_seed
        cfg = recipe(steps, **given)
    else:
        cfg = organism.BuildConfig.long_reading() if args.recipe == "long-reading" else organism.BuildConfig()
    if args.acting != "none":
        cfg = cfg.with_acting(heading=args.acting == "heading")
    if args.forms_per_prompt is not None:
        cfg.refusal = replace(cfg.refusal, forms_per_prompt=args.forms_per_prompt)
    if args.benign_more_repeat is not None:
        cfg.refusal = replace(cfg.refusal, benign_more_repeat=args.benign_more_repeat)
    if args.precision is not None:
        cfg = cfg.with_precision(args.precision, args.device)
    return cfg


def cmd_zoo(args: argparse.Namespace) -> int:
    from sasa.zoo import organism

    if args.zoo_command == "build":
        cfg = build_config(args)
        from sasa.store.cache import cache_dir
        from sasa.zoo.chunks import Chunking, ChunkPaused, Ending

        stages = tuple(x.strip() for x in args.stages.split(",") if x.strip())
        ending = Ending("visual", args.end_at, args.cooldown) if args.end_at is not None else None
        chunking = Chunking(cache_dir() / "organism-build", every_s=60 * args.checkpoint_minutes,
                            stop_after_s=60 * args.chunk_minutes if args.chunk_minutes else None, ending=ending)
        try:
            deadline = time.monotonic() + 60 * args.deadline_minutes if args.deadline_minutes else None
            out = organism.build(args.out, cfg, stages=stages, chunking=chunking, device=args.device,
                                 workers=args.workers, deadline=deadline)
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
        variants = ("with-visual", "without-visual") if args.variant == "both" else (args.variant,)
        result = measure_stages(figstep, xstest, args.out, args.weights,
                                StagesConfig(limit=args.limit or None), variants=variants)
        print(stage_table(result))
        for variant in variants:
            pa = result[variant]["benign_page_answers"]
            print(f"{variant}: benign held-out pages answered {100 * pa['answered_on_page']:.1f}% (as text "
                  f"{100 * pa['answered_as_text']:.1f}%), answer word similarity {100 * pa['word_similarity']:.1f}%"
                  f" (n={pa['n']})")
        if figstep is not None and "with-visual" in result:
            from sasa.judge import short_name
            from sasa.zoo.stages import conditional_table, phenomenon

            print("\nWith the visual LoRA, on the images it transcribes with word accuracy >= 0.8 "
                  "(95 % paired bootstrap intervals):\n" + conditional_table(result["with-visual"]) + "\n")
            ph = phenomenon(result["with-visual"])
            for judge, v in ph.items():
                if judge != "reads":
                    read_gap = "-" if v["read_gap"] is None else f"{100 * v['read_gap']:.1f}"
                    print(f"phenomenon ({short_name(judge)}): reads {ph['reads']}, questions {100 * v['text']:.1f}%, "
                          f"images {100 * v['image']:.1f}%, gap {100 * v['gap']:.1f} points, on the images read "
                          f"{read_gap} points -> {'present' if v['present'] else 'absent'}")
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
