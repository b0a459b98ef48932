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
    "LayerSelection": "sasa.layers",
    "default_layers": "sasa.layers",
    "ProjectionConfig": "sasa.projection",
    "LinearProbe": "sasa.probe",
    "DetectorConfig": "sasa.probe",
    "Record": "sasa.records",
    "MODES": "sasa.modes",
    "Guard": "sasa.guard",
    "Sample": "sasa.data.sample",
    "Evaluation": "sasa.evaluate",
    "fit_detectors": "sasa.training",
    "run_pipeline": "sasa.pipeline",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from sasa.data.sample import Sample
    from sasa.engine import FeatureSpec, SASAEngine
    from sasa.evaluate import Evaluation
    from sasa.guard import Guard
    from sasa.layers import LayerSelection, default_layers
    from sasa.models.adapters import AdapterSpec, get_adapter, register_adapter
    from sasa.models.loading import LoadedModel, load_model
    from sasa.models.sources import register_source
    from sasa.modes import MODES
    from sasa.probe import DetectorConfig, LinearProbe
    from sasa.records import Record
    from sasa.projection import ProjectionConfig
    from sasa.pipeline import run_pipeline
    from sasa.training import fit_detectors


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sasa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
