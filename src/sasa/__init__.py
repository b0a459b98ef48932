"""sasa: Self-Aware Safety Augmentation for vision-language models (arXiv 2507.21637).

The names a user needs are importable from here; each is loaded on first use, so ``import sasa``
stays cheap (no torch, no transformers) until one is touched::

    from sasa import load_model, SASAEngine, LayerSelection, Guard
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "sasa.models.loading",
    "LoadedModel": "sasa.models.loading",
    "get_adapter": "sasa.models.adapters",
    "register_adapter": "sasa.models.adapters",
    "AdapterSpec": "sasa.models.adapters",
    "register_source": "sasa.models.sources",
    "SASAEngine": "sasa.engine",
    "FeatureSpec": "sasa.engine",
    "LayerSelection": "sasa.engine.layers",
    "default_layers": "sasa.engine.layers",
    "ProjectionConfig": "sasa.engine.projection",
    "LinearProbe": "sasa.detector.probe",
    "DetectorConfig": "sasa.detector.probe",
    "Record": "sasa.store.records",
    "MODES": "sasa.guard.modes",
    "Guard": "sasa.guard.generation",
    "Sample": "sasa.data.sample",
    "Evaluation": "sasa.evaluation.runner",
    "fit_detectors": "sasa.detector.fit",
    "run_pipeline": "sasa.evaluation.pipeline",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from sasa.data.sample import Sample
    from sasa.engine import FeatureSpec, SASAEngine
    from sasa.evaluation.runner import Evaluation
    from sasa.guard.generation import Guard
    from sasa.engine.layers import LayerSelection, default_layers
    from sasa.models.adapters import AdapterSpec, get_adapter, register_adapter
    from sasa.models.loading import LoadedModel, load_model
    from sasa.models.sources import register_source
    from sasa.guard.modes import MODES
    from sasa.detector.probe import DetectorConfig, LinearProbe
    from sasa.store.records import Record
    from sasa.engine.projection import ProjectionConfig
    from sasa.evaluation.pipeline import run_pipeline
    from sasa.detector.fit import fit_detectors


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sasa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
