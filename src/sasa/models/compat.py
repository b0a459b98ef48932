"""Every call sasa makes into private or version-specific transformers internals, in one place.

The engine hooks ``generate``'s own prefill (so padding, position ids, caches and image merging are
exactly what ``generate`` does), and its projected decoder drives the model step by step with the
model's own generation helpers.  Those names are not public API; they are wrapped here, with the
transformers range they are known to hold in (``SUPPORTED_TRANSFORMERS``, the package's own
requirement), so a release that moves them breaks one module, and ``tests/test_compat.py`` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SUPPORTED_TRANSFORMERS = (5, 6)  # [5.0, 6): pyproject's ``transformers>=5.0,<6``
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")  # how a block's kwargs name the KV cache


def transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return major, minor


def check_transformers() -> None:
    """Raise naming the installed and the supported versions when outside the tested range."""
    import transformers

    major = transformers_version()[0]
    lo, hi = SUPPORTED_TRANSFORMERS
    if not lo <= major < hi:
        raise RuntimeError(f"sasa's engine supports transformers >={lo}.0,<{hi}; installed: {transformers.__version__}")


@contextmanager
def intercept_prefill(model: Any, on_prefill: Callable[..., Any]) -> Iterator[None]:
    """During the block, ``generate``'s prefill (``model._prefill``) calls
    ``on_prefill(original, input_ids, generation_config, model_kwargs, ...)`` instead."""
    if not hasattr(model, "_prefill"):
        raise RuntimeError(f"{type(model).__name__} has no _prefill: this transformers version is not supported "
                           f"(supported: >={SUPPORTED_TRANSFORMERS[0]}.0,<{SUPPORTED_TRANSFORMERS[1]})")
    original = model._prefill
    model._prefill = lambda *a, **k: on_prefill(original, *a, **k)
    try:
        yield
    finally:
        del model._prefill


def next_step_kwargs(model: Any, outputs: Any, model_kwargs: dict) -> dict:
    """The model kwargs for the next decoding step after ``outputs`` (cache, mask, positions)."""
    return model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=False)


def step_inputs(model: Any, sequences: Any, model_kwargs: dict) -> dict:
    """The inputs of one decoding step for the last token of ``sequences``."""
    return model.prepare_inputs_for_generation(sequences, next_sequence_length=1, **model_kwargs)


def cache_key(model_kwargs: dict) -> str | None:
    for key in CACHE_KWARGS:
        if model_kwargs.get(key) is not None:
            return key
    return None


def find_cache(model_kwargs: dict) -> Any:
    key = cache_key(model_kwargs)
    return None if key is None else model_kwargs[key]


def copy_cache_layers(dst: Any, src: Any, layers: range) -> None:
    """Make ``dst``'s per-block cache entries for ``layers`` be ``src``'s (``Cache.layers``)."""
    for j in layers:
        dst.layers[j] = src.layers[j]


def execution_device(module: Any) -> Any:
    """The device ``module`` computes on. Under an accelerate device map an offloaded module's
    weights sit on ``meta`` between calls and its hook (``_hf_hook``, accelerate-internal) moves
    them, and its inputs, to the hook's ``execution_device``; otherwise its weights' device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        import torch

        return torch.device(device) if not isinstance(device, torch.device) else device
    return next(module.parameters()).device
