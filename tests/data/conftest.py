"""Fixtures for the data-layer tests: the shared real data, installed-package checks, and tiny
trees in each benchmark's exact published layout (see ``data_fixtures.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from .data_fixtures import BUILDERS

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def needs_package(module: str) -> None:
    """Skip unless ``module`` is installed, without importing it (these packages import litellm,
    which reaches for the network at import time)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (the 'benchmarks' extra)")


@pytest.fixture
def needs():
    """``needs("module")``: skip the test unless the module is installed (see needs_package)."""
    return needs_package


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "figstep" / "safebench.csv").is_file() or not (SHARED / "xstest" / "xstest_prompts.csv").is_file():
        pytest.skip(f"shared benchmark data not found at {SHARED} (only present in the project's workspace)")
    return SHARED


@pytest.fixture
def fixture_tree(tmp_path):
    """``fixture_tree(name)`` writes benchmark ``name``'s exact-layout fixture and returns its root."""

    def build(name: str) -> Path:
        return BUILDERS[name](tmp_path / name)

    return build
