"""``sasa data ...`` commands: list, build, show, split, render, builtin.

Wire-up (in ``sasa.cli``)::

    data = subparsers.add_parser("data", help="benchmarks, manifests, splits, rendering")
    add_data_commands(data.add_subparsers(dest="data_command", required=True))
    ...
    if args.command == "data":
        return run_data_command(args)

``add_data_commands`` accepts either the subparsers object of a ``data`` parser (as above) or the
top-level subparsers object, in which case it adds the ``data`` parser itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from sasa.data.base import IMAGE_CHECK_CHOICES, ON_ERROR_CHOICES, DataError, LoadResult
from sasa.data.registry import BENCHMARKS, builtin_dataset, load
from sasa.data.sample import ManifestError, Sample, write_manifest
from sasa.data.splits import PRESETS, SplitPlan, assign_splits, split_report
from sasa.errors import UsageError

log = logging.getLogger(__name__)


def _common_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise",
                   help="bad rows: stop with an error naming file and row (raise), or skip and report them")
    p.add_argument("--check-images", choices=IMAGE_CHECK_CHOICES, default="verify",
                   help="verify: open every image; exists: only check the file is there; none")


def _add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the benchmarks and their variants")
    p.set_defaults(data_command="list")

    p = sub.add_parser("build", help="read a benchmark in its published layout and write a JSONL manifest")
    p.add_argument("benchmark", choices=sorted(BENCHMARKS))
    p.add_argument("path", nargs="?", default=None,
                   help="the benchmark's folder or file (optional for harmbench, strongreject, benign)")
    p.add_argument("--variant", default=None, help="benchmark variant (see `sasa data list`)")
    p.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    p.add_argument("--relative-images", action="store_true",
                   help="write image paths relative to the manifest's folder")
    _common_load_args(p)
    p.set_defaults(data_command="build")

    p = sub.add_parser("show", help="summarise manifests: counts by source, attack, label, split; first samples")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--limit", type=int, default=5, help="samples to print (0: none)")
    _common_load_args(p)
    p.set_defaults(data_command="show")

    p = sub.add_parser("split", help="assign deterministic train/val/test splits by family; report class balance")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named plan (default unseen-families unless --train/--shared is given)")
    p.add_argument("--train", action="append", default=[], metavar="PATTERN",
                   help="family glob (source:attack) for train, repeatable, e.g. figstep:text")
    p.add_argument("--test", action="append", default=None, metavar="PATTERN",
                   help="family glob for test, repeatable (default: every family not otherwise matched)")
    p.add_argument("--shared", action="append", default=[], metavar="PATTERN",
                   help="family glob cut by hash across splits, repeatable, e.g. 'sasa-benign:*'")
    p.add_argument("--train-fraction", type=float, default=None, help="shared families: share in train (0.7)")
    p.add_argument("--val-fraction", type=float, default=None, help="share in val (0.0)")
    p.add_argument("--seed", type=int, default=None, help="hash seed (0)")
    p.add_argument("--out", default=None, help="one manifest with the split field set")
    p.add_argument("--out-dir", default=None, help="write train.jsonl / val.jsonl / test.jsonl here")
    _common_load_args(p)
    p.set_defaults(data_command="split")

    p = sub.add_parser("render", help="turn the text samples of manifests into typographic image attacks")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--style", choices=("figstep", "typo"), default="figstep")
    p.add_argument("--image-dir", required=True, help="folder for the PNG files")
    p.add_argument("--out", required=True, help="manifest of the rendered samples")
    p.add_argument("--font", default=None, help="a .ttf file instead of Pillow's built-in font")
    p.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise")
    p.set_defaults(data_command="render")

    p = sub.add_parser("builtin", help="write the offline default dataset (benign set + HarmBench + StrongREJECT)")
    p.add_argument("--out", required=True)
    p.set_defaults(data_command="builtin")


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser | None:
    """Register the ``data`` commands on ``subparsers`` (see the module doc for both ways)."""
    if getattr(subparsers, "dest", None) in ("data_command",):
        _add_commands(subparsers)
        return None
    data = subparsers.add_parser("data", help="benchmarks, manifests, splits, typographic rendering")
    _add_commands(data.add_subparsers(dest="data_command", required=True))
    return data


def _load_manifests(paths: list[str], on_error: str, check_images: str) -> LoadResult:
    total = LoadResult([])
    seen: dict[str, str] = {}
    for p in paths:
        res = load("manifest", p, on_error=on_error, check_images=check_images)
        for s in res.samples:
            if s.id in seen:
                msg = f"duplicate sample id {s.id!r} in {p} (also in {seen[s.id]})"
                if on_error == "raise":
                    raise DataError(msg)
                res.skipped.append((p, msg))
                continue
            seen[s.id] = p
            total.samples.append(s)
        total.skipped.extend(res.skipped)
    return total


def _print_skips(res: LoadResult) -> None:
    if res.skipped:
        print(res.report(), file=sys.stderr)


def _counts(samples: list[Sample], key) -> str:
    c = Counter(key(s) for s in samples)
    return ", ".join(f"{k}: {n}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _cmd_list(args) -> int:
    for name, b in sorted(BENCHMARKS.items()):
        path = " [path optional]" if b.path_optional else ""
        print(f"{name:<14}{b.description}{path}")
        print(f"{'':<14}variants: {', '.join(b.variants)} (default {b.default_variant})")
    return 0


def _cmd_build(args) -> int:
    res = load(args.benchmark, args.path, variant=args.variant, on_error=args.on_error,
               check_images=args.check_images)
    write_manifest(res.samples, args.out, relative_images=args.relative_images)
    print(f"wrote {len(res.samples)} samples to {args.out}" + (f" ({len(res.skipped)} rows skipped)" if res.skipped else ""))
    _print_skips(res)
    return 0


def _cmd_show(args) -> int:
    res = _load_manifests(args.manifests, args.on_error, args.check_images)
    s = res.samples
    print(f"{len(s)} samples")
    print(f"  label:  {_counts(s, lambda x: x.label)}")
    print(f"  source: {_counts(s, lambda x: x.source)}")
    print(f"  attack: {_counts(s, lambda x: x.attack)}")
    print(f"  split:  {_counts(s, lambda x: x.split)}")
    print(f"  with image: {sum(x.image is not None for x in s)}")
    for x in s[: max(0, args.limit)]:
        prompt = " ".join(x.prompt.split())
        print(f"- {x.id} [{x.label}] {x.source}:{x.attack} {x.category or ''}")
        print(f"    prompt: {prompt[:160]}{'...' if len(prompt) > 160 else ''}")
        if x.image:
            print(f"    image:  {x.image}")
    _print_skips(res)
    return 0


def _plan_from_args(args) -> SplitPlan:
    custom = bool(args.train or args.shared or args.test)
    if args.preset and custom:
        raise UsageError("give either --preset or --train/--test/--shared, not both")
    base = PRESETS[args.preset or "unseen-families"] if not custom else SplitPlan()
    kw = {}
    if custom:
        kw.update(train=tuple(args.train), shared=tuple(args.shared),
                  test=None if args.test is None else tuple(args.test))
    for name in ("train_fraction", "val_fraction", "seed"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return SplitPlan(**{**base.__dict__, **kw})


def _cmd_split(args) -> int:
    if not args.out and not args.out_dir:
        raise UsageError("give --out and/or --out-dir")
    plan = _plan_from_args(args)
    res = _load_manifests(args.manifests, args.on_error, args.check_images)
    split = assign_splits(res.samples, plan)
    rep = split_report(split, res.samples)
    if args.out:
        write_manifest(split, args.out)
        print(f"wrote {len(split)} samples to {args.out}")
    if args.out_dir:
        for name in ("train", "val", "test"):
            part = [s for s in split if s.split == name]
            if part:
                out = Path(args.out_dir) / f"{name}.jsonl"
                write_manifest(part, out)
                print(f"wrote {len(part)} samples to {out}")
    print(rep.format())
    _print_skips(res)
    return 0


def _cmd_render(args) -> int:
    from sasa.data.attacks import render_samples

    res = _load_manifests(args.manifests, args.on_error, "none")
    out = render_samples(res.samples, args.image_dir, style=args.style, font_path=args.font, on_error=args.on_error)
    write_manifest(out.samples, args.out)
    print(f"rendered {len(out.samples)} images into {args.image_dir}; manifest {args.out}")
    res.extend(LoadResult([], out.skipped))
    _print_skips(res)
    return 0


def _cmd_builtin(args) -> int:
    samples = builtin_dataset()
    write_manifest(samples, args.out)
    print(f"wrote {len(samples)} samples to {args.out} ({_counts(samples, lambda x: x.label)})")
    return 0


COMMANDS = {"list": _cmd_list, "build": _cmd_build, "show": _cmd_show, "split": _cmd_split,
            "render": _cmd_render, "builtin": _cmd_builtin}


def run_data_command(args: argparse.Namespace) -> int:
    """Run a parsed ``sasa data ...`` command; 0 on success, 2 on a wrong command line, 1 on bad
    input (message on stderr)."""
    try:
        return COMMANDS[args.data_command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DataError, ManifestError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m sasa.cli.data ...``), handy until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="sasa data")
    add_data_commands(parser.add_subparsers(dest="data_command", required=True))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_data_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
