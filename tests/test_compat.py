"""The private transformers internals sasa relies on (sasa.models.compat) exist on every tiny
architecture in the installed version, which lies in the supported range."""

import pytest
import torch

from conftest import tiny_adapter
from sasa.models import compat
from sasa.testing.tiny_models import TINY_ARCHITECTURES


def test_installed_transformers_is_in_the_supported_range(monkeypatch):
    import transformers

    lo, hi = compat.SUPPORTED_TRANSFORMERS
    assert lo <= compat.transformers_version()[0] < hi
    compat.check_transformers()
    monkeypatch.setattr(transformers, "__version__", f"{hi}.0.0")
    with pytest.raises(RuntimeError, match=f"<{hi}; installed: {hi}.0.0"):
        compat.check_transformers()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_the_internals_the_engine_calls_exist(arch):
    adapter = tiny_adapter(arch)
    model = adapter.model
    assert callable(getattr(model, "_prefill", None)), "generate's prefill moved: update compat.intercept_prefill"
    assert callable(getattr(model, "_update_model_kwargs_for_generation", None))
    assert callable(getattr(model, "prepare_inputs_for_generation", None))


def test_intercepted_prefill_sees_the_cache_and_is_always_restored():
    adapter = tiny_adapter("llama")
    model = adapter.model
    inputs = adapter.encode(["bake bread", "water the plants today"])
    seen = {}

    def on_prefill(original, input_ids, generation_config, model_kwargs, *a, **k):
        out = original(input_ids, generation_config, model_kwargs, *a, **k)
        cache = compat.find_cache(model_kwargs)
        seen["layers"] = len(cache.layers)
        return out

    with torch.inference_mode(), compat.intercept_prefill(model, on_prefill):
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert seen["layers"] == adapter.num_layers and "_prefill" not in model.__dict__

    def boom(*a, **k):
        raise KeyError("stop")

    with pytest.raises(KeyError), torch.inference_mode(), compat.intercept_prefill(model, boom):
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert "_prefill" not in model.__dict__
