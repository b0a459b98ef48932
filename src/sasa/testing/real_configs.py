"""Random-weight models at real LVLM sizes, for speed figures without a download.

The numbers are the published configurations (``config.json`` of each hub repository: decoder and
vision widths, depths, heads, vocabulary, image resolution and image-token count).  ``size="full"``
builds exactly that shape (a GPU's job: 4-8 B parameters); ``size="reduced"`` divides every width
and depth by ``REDUCTION`` while keeping head size, grouped-query ratio, layer pattern, vocabulary,
image resolution and image-token count, so the prompt is as long as the real model's and the
relative cost of SASA's extra blocks is the real one.  The tokenizer and chat template come from the
tiny builders (a small offline vocabulary; ids index the real-size embedding).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the shapes are plain data: reading them (the CLI's choices) imports no torch
    import torch
    import transformers

REDUCTION = 4


@dataclass(frozen=True)
class RealConfig:
    """One published model's shape; ``text`` / ``vision`` override the tiny builder's configs."""

    name: str
    hub_id: str
    arch: str  # the tiny builder that supplies tokenizer, template and config class
    text: dict[str, Any]
    vision: dict[str, Any]
    image_size: int  # the side of the square test image that gives ``image_tokens``
    image_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


# Qwen2-VL-7B and Qwen2.5-VL-7B share this language model (Qwen2-7B's shape, M-RoPE)
_QWEN2_7B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                      num_key_value_heads=4, head_dim=128, vocab_size=152064,
                      rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                       "mrope_section": [16, 24, 24]})

CONFIGS: dict[str, RealConfig] = {c.name: c for c in (
    RealConfig(
        "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava",
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128, vocab_size=32064),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        image_size=336, image_tokens=576),
    RealConfig(
        "qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl",
        text=_QWEN2_7B_TEXT,
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=3584),
        image_size=448, image_tokens=256),
    RealConfig(
        "qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl",
        text=_QWEN2_7B_TEXT,
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                    window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
        image_size=448, image_tokens=256),
    RealConfig(
        "gemma-3-4b", "google/gemma-3-4b-it", "gemma3",
        text=dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                  vocab_size=262208),
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                    image_size=896, patch_size=14, vision_use_head=False),
        image_size=896, image_tokens=256, extra=dict(mm_tokens_per_image=256)),
)}

_WIDTHS = ("hidden_size", "intermediate_size", "embed_dim", "out_hidden_size", "projection_dim")
_COUNTS = ("num_hidden_layers", "depth", "num_attention_heads", "num_heads")


def _reduce(values: dict[str, Any]) -> dict[str, Any]:
    """Width and depth over REDUCTION; head size kept (so heads shrink with width), GQA ratio kept."""
    out = dict(values)
    for k in _WIDTHS:
        if k in out:
            out[k] = max(1, out[k] // REDUCTION)
    for k in _COUNTS:
        if k in out:
            out[k] = max(1, out[k] // REDUCTION)
    if "num_key_value_heads" in out:
        ratio = values["num_attention_heads"] // values["num_key_value_heads"]
        out["num_key_value_heads"] = max(1, out["num_attention_heads"] // ratio)
    if "fullatt_block_indexes" in out:  # every (depth / n)-th block stays a full-attention one
        step = values["depth"] // len(values["fullatt_block_indexes"])
        out["fullatt_block_indexes"] = [i for i in range(out["depth"]) if (i + 1) % max(1, step // REDUCTION) == 0]
    return out


def shape(name: str, size: str = "reduced") -> RealConfig:
    """The configuration to build: as published (``full``) or reduced (module doc)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
    if size not in ("full", "reduced"):
        raise ValueError(f"size must be 'full' or 'reduced', not {size!r}")
    real = CONFIGS[name]
    if size == "full":
        return real
    vision = _reduce(real.vision)
    if real.arch.startswith("qwen2"):  # the merger writes the decoder's width
        vision["out_hidden_size" if "out_hidden_size" in vision else "hidden_size"] = real.text["hidden_size"] // REDUCTION
    return RealConfig(real.name + "-reduced", real.hub_id, real.arch, _reduce(real.text), vision, real.image_size,
                      real.image_tokens, dict(real.extra))


def _processor(real: RealConfig, tiny_processor: Any) -> Any:
    import transformers

    from sasa.testing.tiny_models import TinyQwen2_5_VLProcessor, TinyQwen2VLProcessor

    tok, template = tiny_processor.tokenizer, tiny_processor.chat_template
    side = real.image_size
    if real.arch == "llava":
        ip = transformers.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        return transformers.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=real.vision["patch_size"],
                                           vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                           chat_template=template)
    if real.arch in ("qwen2_vl", "qwen2_5_vl"):
        pixels = side * side
        ip = transformers.Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels},
                                                   patch_size=14, merge_size=2, temporal_patch_size=2)
        cls = TinyQwen2VLProcessor if real.arch == "qwen2_vl" else TinyQwen2_5_VLProcessor
        return cls(image_processor=ip, tokenizer=tok, chat_template=template)
    if real.arch == "gemma3":
        ip = transformers.Gemma3ImageProcessorPil(size={"height": side, "width": side})
        return transformers.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=real.image_tokens,
                                            chat_template=template)
    raise ValueError(f"no real-size processor for {real.arch!r}")


def build_random(name: str, size: str = "reduced", dtype: "torch.dtype | None" = None, device: str = "cpu",
                 seed: int = 0) -> "tuple[transformers.PreTrainedModel, Any, RealConfig]":
    """(model, processor, shape): a random-weight model of the named real configuration (float32
    unless ``dtype`` says otherwise)."""
    import torch

    from sasa.testing.tiny_models import build_tiny

    dtype = dtype or torch.float32
    real = shape(name, size)
    tiny_model, tiny_processor = build_tiny(real.arch, seed)
    config = copy.deepcopy(tiny_model.config)
    text = config.get_text_config()
    for k, v in real.text.items():
        setattr(text, k, v)
    if real.arch == "gemma3":
        n = text.num_hidden_layers
        text.layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    elif hasattr(text, "layer_types"):
        text.layer_types = [text.layer_types[0]] * text.num_hidden_layers
    for k, v in real.vision.items():
        setattr(config.vision_config, k, v)
    for k, v in real.extra.items():
        setattr(config, k, v)
    if real.arch == "llava":
        config.image_seq_length = real.image_tokens
    torch.manual_seed(seed)
    with torch.device(device):
        model = type(tiny_model)._from_config(config, dtype=dtype)
    model.generation_config = copy.deepcopy(tiny_model.generation_config)
    model.eval()
    return model, _processor(real, tiny_processor), real


def parameter_count(model: "torch.nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())
