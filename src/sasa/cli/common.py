"""What the commands share: the model and engine options, loading, the samples of a run, the
layer selection and the detectors (given or fitted), the judges."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sasa.errors import UsageError

logger = logging.getLogger("sasa")


DTYPES = ("auto", "float32", "bfloat16", "float16")


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
    from sasa.engine.layers import LayerSelection, default_layers

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
    from sasa.engine.projection import ProjectionConfig

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


def _hiddendetect_config(adapter: Any, args: argparse.Namespace) -> Any:
    """HiddenDetect's options; its layers from --hiddendetect-layers, else from the --profile if it has them."""
    from sasa.detector.detectors import HiddenDetectConfig

    layers = tuple(args.hiddendetect_layers) if args.hiddendetect_layers else None
    profile = _profile(adapter, args)
    if layers is None and profile is not None and profile.hiddendetect_layers is not None:
        layers = profile.hiddendetect_layers
        logger.info("HiddenDetect layers from profile %s: %s", args.profile, layers)
    return HiddenDetectConfig(token_rule=args.hiddendetect_tokens, layer_rule=args.hiddendetect_layer_rule,
                              layers=layers, last_layer=args.hiddendetect_last_layer)


def _given_probes(args: argparse.Namespace) -> dict[str, Any]:
    """The fitted probe directories given on the command line, by the mode they serve."""
    return {"detect": args.detector, "probe-noproj": args.baseline_detector}


def _detector_sources(args: argparse.Namespace, adapter: Any, samples: list, needed: list[str]) -> dict[str, Any]:
    """What :func:`sasa.detector.fit.assemble_detectors` needs from the command line: the probe
    directories given (--detector / --baseline-detector), the data's train/val splits for the rest,
    and the fitting settings (layers, FPR target, HiddenDetect's options) when anything is fitted."""
    given = _given_probes(args)
    fit = [d for d in needed if not given.get(d)]
    return {"train": [s for s in samples if s.split == "train"], "val": [s for s in samples if s.split == "val"],
            "given": given, "selection": _selection(adapter, args) if fit else None, "target_fpr": args.target_fpr,
            "hiddendetect": _hiddendetect_config(adapter, args) if "hiddendetect" in fit else None}


def _detectors(args: argparse.Namespace, adapter: Any, samples: list, needed: list[str],
               keep_features: bool = False) -> dict:
    """The detectors ``needed``, given or fitted (:func:`_detector_sources`)."""
    from sasa.detector.fit import assemble_detectors

    src = _detector_sources(args, adapter, samples, needed)
    detectors, _ = assemble_detectors(adapter, needed, src.pop("train"), src.pop("val"), src.pop("given"),
                                      batch_size=args.batch_size, model_name=args.model,
                                      keep_features=keep_features, **src)
    return detectors


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
