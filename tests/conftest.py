"""Shared fixtures: tiny real-architecture models (built offline, cached per session) and test data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_TINY: dict = {}


def tiny(arch: str):
    """(model, processor) of a tiny random model; built once per test session and never mutated by sasa."""
    from sasa.testing.tiny_models import build_tiny

    if arch not in _TINY:
        _TINY[arch] = build_tiny(arch, seed=0)
    return _TINY[arch]


def tiny_adapter(arch: str):
    from sasa.models.adapters import get_adapter

    model, processor = tiny(arch)
    return get_adapter(model, processor)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sasa_cache(tmp_path_factory) -> Path:
    """Where the dequantised SmolLM2 weights are cached (the user's cache unless SASA_CACHE is set)."""
    from sasa.models.loading import cache_dir

    return cache_dir()


@pytest.fixture(scope="session")
def quick_organism(tmp_path_factory) -> Path:
    """A fixed-seed, few-step build of every organism stage (a pipeline smoke, not a usable model)."""
    from sasa.zoo import organism

    return organism.build(tmp_path_factory.mktemp("quick-organism"), organism.BuildConfig.quick(), progress=False)
