"""Named model sources: short names (``smollm2-135m``, ``sasa-organism``) that resolve to a local
transformers directory when first used.

Entries are ``"module:function"`` strings, imported only when their name is loaded (as
lm-evaluation-harness registers tasks), so the core never imports the experiments that build a
source -- the organism lives in :mod:`sasa.zoo` -- and a user adds one without touching the core.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

_SOURCES: dict[str, str | Callable[[], Path]] = {
    "smollm2-135m": "sasa.models.smollm2:materialise",
    "sasa-organism": "sasa.zoo.organism:materialise",
    "qwen2.5-coder-0.5b-instruct": "sasa.models.qwen_coder:materialise_0_5b",
    "qwen2.5-coder-1.5b-instruct": "sasa.models.qwen_coder:materialise_1_5b",
    "qwen2.5-coder-0.5b-instruct-gguf": "sasa.models.qwen_coder:materialise_0_5b_gguf",
    "qwen2.5-coder-1.5b-instruct-gguf": "sasa.models.qwen_coder:materialise_1_5b_gguf",
}


def register_source(name: str, target: str | Callable[[], Path]) -> None:
    """Make ``load_model(name)`` load the directory ``target()`` returns (``target``: a callable or
    ``"module:function"``)."""
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"model source {name!r}: {target!r} is not 'module:function'")
    _SOURCES[name] = target


def source_names() -> list[str]:
    return sorted(_SOURCES)


def resolve_source(name: str) -> Path | None:
    """The local directory of a named source (materialised on first use), or None for other names."""
    target = _SOURCES.get(name)
    if target is None:
        return None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return Path(target())
