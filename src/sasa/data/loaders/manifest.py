"""A SASA JSONL manifest as a loader, so manifests get the same raise-or-skip handling as benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, parse_variant, require_file
from sasa.data.sample import ManifestError, iter_manifest

VARIANTS = ("all",)


def load_manifest(
    path: str | os.PathLike,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Read a manifest written by :func:`sasa.data.write_manifest` (or by hand)."""
    parse_variant(variant, VARIANTS, "all", "manifest")
    path = require_file(Path(path), "manifest")
    sink = Collector(on_error, check_images)
    for lineno, item in iter_manifest(path):
        loc = f"{path}:{lineno}"
        if isinstance(item, ManifestError):
            sink.bad(loc, str(item).removeprefix(f"{loc}: "))
            continue
        sink.keep(loc, item)
    return sink.result()
