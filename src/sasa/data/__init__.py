"""Samples, manifests, benchmark loaders, typographic rendering and splits.

* :class:`Sample` and JSONL manifests (:func:`read_manifest`, :func:`write_manifest`);
* :func:`load` / :data:`BENCHMARKS`: every benchmark from its published layout, with bad input
  raised or skipped-and-reported (:class:`LoadResult`, :class:`DataError`);
* :func:`builtin_dataset`: the offline default dataset (packaged benign set + HarmBench +
  StrongREJECT from their PyPI packages);
* :mod:`sasa.data.attacks`: FigStep- and MM-SafetyBench-style typographic images from any text
  (the published attacks' layouts);
* :mod:`sasa.data.pages`: a request typed on a page in FigStep's layout (the demo's and the
  organism's pages); :mod:`sasa.data.typeset`: the fonts and drawing both use;
* :mod:`sasa.data.splits`: deterministic splits by family, class balance per split.
"""

from sasa.data.base import DataError, LoadResult
from sasa.data.registry import BENCHMARKS, builtin_dataset, load
from sasa.data.sample import LABELS, ManifestError, Sample, iter_manifest, read_manifest, write_manifest
from sasa.data.splits import PRESETS, SplitPlan, assign_splits, class_balance, family, split_report

__all__ = [
    "BENCHMARKS",
    "LABELS",
    "PRESETS",
    "DataError",
    "LoadResult",
    "ManifestError",
    "Sample",
    "SplitPlan",
    "assign_splits",
    "builtin_dataset",
    "class_balance",
    "family",
    "iter_manifest",
    "load",
    "read_manifest",
    "split_report",
    "write_manifest",
]
