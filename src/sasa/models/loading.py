"""Load a model and its processor by hub id, local directory, GGUF file or named source
(:mod:`sasa.models.sources`: the embedded ``smollm2-135m`` and ``sasa-organism``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from sasa.models.adapters import (
    _REGISTRY,
    UnsupportedModelError,
    get_adapter,
    supported_model_types,
)
from sasa.models.sources import resolve_source

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str

    @cached_property
    def adapter(self):
        """The architecture adapter, built once (it holds the resolved layer paths)."""
        return get_adapter(self.model, self.processor)


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


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    device_map: str | dict | None = None,
    offload_folder: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a supported model and its processor (vision models) or tokenizer (text models).

    ``name_or_path``: a named source (``smollm2-135m``, the embedded text model; ``sasa-organism``,
    the embedded LVLM organism; see :func:`sasa.models.sources.register_source`), a hub id, a local
    directory, or a ``.gguf`` file (text models). The
    architecture is checked against the adapter registry before any weights are read.
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    source = resolve_source(name_or_path)
    if source is not None:
        name_or_path = str(source)
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
        if offload_folder:
            kwargs["offload_folder"] = str(offload_folder)
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
