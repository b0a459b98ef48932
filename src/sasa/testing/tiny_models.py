"""Tiny random-weight models of real Hugging Face architectures, built in-process and offline.

Why these exist
---------------
SASA's stages (localise, project, probe, guard, evaluate) hook into the decoder layers, the image-token
positions and the generation loop of real vision-language models. Testing that code, and benchmarking its
overhead, should not need a model hub, a GPU or gigabytes of weights. :func:`build_tiny` gives, for each
architecture family the toolkit supports, a model of the *real* ``transformers`` class (real attention, RoPE /
M-RoPE, vision tower, projector, image-token merging, generation) with a few hundred thousand random
parameters, together with the *real* processor class, the *real* image processor (PIL backend) and a
byte-level BPE tokenizer carrying that family's special tokens and a chat template in that family's style.
Nothing is downloaded or read from disk; :func:`save_tiny` writes a directory that
``AutoModelForCausalLM`` / ``AutoModelForImageTextToText`` / ``AutoTokenizer`` / ``AutoProcessor``
``.from_pretrained`` reload offline. Weights are random, so generations are gibberish: these models test
plumbing, shapes, positions, padding and determinism, never behaviour. Nothing is cached here: callers cache.

What each architecture mimics
-----------------------------
==============  ======================================  ====================================================
arch            model class                             checkpoint family mimicked
==============  ======================================  ====================================================
``llama``       ``LlamaForCausalLM``                    Llama-3.x-Instruct (``<|start_header_id|>`` turns,
                                                        ``<|eot_id|>``; the tokenizer adds BOS)
``qwen2``       ``Qwen2ForCausalLM``                    Qwen2.5-Instruct (ChatML, default system prompt)
``llava``       ``LlavaForConditionalGeneration``       llava-hf/llava-1.5 (CLIP tower, Llama LM,
                                                        ``USER: <image>\\n... ASSISTANT:``)
``llava_next``  ``LlavaNextForConditionalGeneration``   llava-hf/llava-v1.6-mistral (anyres
                                                        ``image_grid_pinpoints``, Mistral LM,
                                                        ``[INST] <image>\\n... [/INST]``)
``qwen2_vl``    ``Qwen2VLForConditionalGeneration``     Qwen2-VL-Instruct (M-RoPE, ``image_grid_thw``,
                                                        ``<|vision_start|><|image_pad|><|vision_end|>``)
``qwen2_5_vl``  ``Qwen2_5_VLForConditionalGeneration``  Qwen2.5-VL-Instruct (the same, plus windowed vision
                                                        attention with one full-attention block)
``idefics3``    ``Idefics3ForConditionalGeneration``    HuggingFaceM4/Idefics3-8B-Llama3 (image splitting
                                                        into a crop grid + global view, pixel shuffle 2)
``smolvlm``     ``SmolVLMForConditionalGeneration``     HuggingFaceTB/SmolVLM-256M/500M-Instruct (the same
                                                        with pixel shuffle 4, SmolLM2 tokens)
``gemma3``      ``Gemma3ForConditionalGeneration``      google/gemma-3-4b-it (SigLIP tower, average-pooled
                                                        soft tokens, five sliding-window layers then one
                                                        global layer, window 16 tokens)
``internvl``    ``InternVLForConditionalGeneration``    OpenGVLab/InternVL3-1B-hf (tiles + thumbnail, pixel
                                                        shuffle 0.5, Qwen2 LM, ``<img><IMG_CONTEXT>..</img>``)
==============  ======================================  ====================================================

Sizes: every language model has 6 decoder layers, hidden size 64, 4 attention heads over 2 key/value heads
(grouped-query attention, head dim 16); every vision tower has 2 layers of width 32. A 64x64 image becomes
16 (llava, gemma3), 24 (llava_next), 4 (qwen2_vl, qwen2_5_vl) or 20 (idefics3, smolvlm, internvl) image
tokens. Attention is ``sdpa`` everywhere, language model and vision tower. Weights are fp32 on CPU, in eval
mode, initialised by the model's own ``_init_weights`` right after ``torch.manual_seed(seed)``, so the same
seed gives bit-identical weights. The few matrices that this init leaves at zero (Gemma 3's image projection,
which would map every image to zeros; InternViT's class token and position embeddings) are then drawn like
the rest, so every part of the network carries signal. On a small shared CPU, run these models with
``torch.set_num_threads(1)``: their matrices are too small for intra-op threads, which only spin.

Tokenizers: a byte-level BPE over the 256 byte symbols with no merges (ids 0-255 are the bytes), so any UTF-8
text round-trips, then the family's special tokens, each a single token; model-specific ones are attributes
as on the real tokenizers (``tokenizer.image_token``, ``tokenizer.boi_token``...). The Qwen-family ones are the
real ``Qwen2Tokenizer`` class (which ``AutoTokenizer`` picks for Qwen checkpoints anyway), the others
``PreTrainedTokenizerFast``, which is what ``AutoTokenizer`` loads for byte-level Llama-3-style checkpoints.
Tokenizers that add BOS (Llama-3, Llama-2/Mistral, Gemma) do so on every encode, as the real ones do, so a
chat-templated string that already starts with BOS gets two unless encoded with ``add_special_tokens=False``.
Padding side is the library default, "right", except for InternVL, whose processor pads left: batch
generation must ask for left padding, as with the real checkpoints.

Deviation from the real processors (torchvision is not available here)
-----------------------------------------------------------------------
In this ``transformers`` version the processors of Qwen2-VL, Qwen2.5-VL, SmolVLM and InternVL take a *video*
processor, and every video processor requires torchvision, which cannot be installed against this torch; the
processor's constructor rejects a missing one. Those four are therefore built as thin subclasses of the real
processor classes (:class:`TinyQwen2VLProcessor`, :class:`TinyQwen2_5_VLProcessor`,
:class:`TinySmolVLMProcessor`, :class:`TinyInternVLProcessor`) whose only change is that they have no video
processor: all image and text processing (image processor, placeholder expansion, chat template, padding) is
the real classes' code, and only ``videos=`` is refused. The subclasses are registered with ``AutoProcessor``
under their own names (not under the real config classes), so ``AutoProcessor.from_pretrained`` reloads a saved
directory in any process that has imported this module (in one that has not, it quietly falls back to returning
the bare tokenizer, as it does for any processor class it cannot find). The real SmolVLM processor also refuses to start
without the optional ``num2words`` package, which it only uses to spell out video frame counts; when that
package is missing, the subclass's constructor gets a stand-in that raises if it is ever called. The saved
image-processor configs name the class without its backend, so where torchvision *is* installed a reload picks
the torchvision twin of the PIL image processor, exactly as it would for a real checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import transformers
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

__all__ = [
    "TINY_ARCHITECTURES",
    "VISION_ARCHITECTURES",
    "build_tiny",
    "save_tiny",
    "tiny_image",
]

TINY_ARCHITECTURES: tuple[str, ...] = (
    "llama",
    "qwen2",
    "llava",
    "llava_qwen2",
    "llava_next",
    "qwen2_vl",
    "qwen2_5_vl",
    "idefics3",
    "smolvlm",
    "gemma3",
    "internvl",
)
_TEXT_ARCHITECTURES = ("llama", "qwen2")
VISION_ARCHITECTURES: tuple[str, ...] = tuple(a for a in TINY_ARCHITECTURES if a not in _TEXT_ARCHITECTURES)

ATTN_IMPLEMENTATION = "sdpa"

# Language model shared by every architecture: 6 layers so that layer choices (e.g. s=2, f=3) are meaningful,
# 4 query heads over 2 key/value heads to exercise grouped-query attention.
_LM = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)
_HEAD_DIM = _LM["hidden_size"] // _LM["num_attention_heads"]
# Vision towers: 2 layers, width 32.
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
_MODEL_MAX_LENGTH = 4096


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-to-printable-character table that byte-level BPE vocabularies are written in."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _make_tokenizer(
    *,
    specials: list[str],
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    add_bos: bool,
    named: dict[str, str] | None = None,
    chat_template: str,
    padding_side: str = "right",
    qwen: bool = False,
) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 bytes (no merges) plus ``specials`` as single special tokens.

    Ids 0-255 are the bytes, then ``specials``. ``named`` maps model-specific attribute names
    (``image_token``, ``boi_token``...) to tokens, so ``tokenizer.image_token`` / ``tokenizer.image_token_id``
    exist as they do on the real tokenizers. ``qwen=True`` builds the real ``Qwen2Tokenizer`` class (Qwen's
    pre-tokenizer regex and NFC normaliser over the same byte vocabulary), which is also what ``AutoTokenizer``
    picks for Qwen checkpoints; the others are ``PreTrainedTokenizerFast`` (``TokenizersBackend``), which is
    what ``AutoTokenizer`` loads for byte-level Llama-3 style checkpoints.
    """
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    ordered = list(dict.fromkeys(specials))
    named = dict(named or {})
    named_values = set(named.values())
    extra = [t for t in ordered if t not in {bos, eos, pad, unk} and t not in named_values]
    common = dict(
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        extra_special_tokens=extra,
        chat_template=chat_template,
        padding_side=padding_side,
        model_max_length=_MODEL_MAX_LENGTH,
        **named,
    )
    if qwen:
        tok = transformers.Qwen2Tokenizer(vocab=vocab, merges=[], **common)
    else:
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ordered])
        tok = transformers.PreTrainedTokenizerFast(
            tokenizer_object=backend, add_bos_token=add_bos, add_eos_token=False, **common
        )
    missing = [t for t in ordered if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id) and t != unk]
    if missing:
        raise RuntimeError(f"special tokens {missing} did not make it into the tiny vocabulary")
    return tok


def _ids(tok, *tokens: str) -> list[int]:
    out = []
    for t in tokens:
        i = tok.convert_tokens_to_ids(t)
        if i is None or (i == tok.unk_token_id and t != tok.unk_token):
            raise RuntimeError(f"token {t!r} is not in the tiny vocabulary")
        out.append(int(i))
    return out


# Jinja fragments shared by the chat templates: a message's content may be a string or a list of
# {"type": "text"|"image", ...} parts.
_TEXT_OF = (
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
)


def _inline_parts(image: str) -> str:
    """Render content parts in order, an image part as ``image``."""
    return (
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
        "{%- elif part['type'] == 'image' -%}{{- '" + image + "' -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
    )


def _images_first(image: str, text_suffix: str = "") -> str:
    """Render a message's image parts first, then its text parts (the LLaVA-hf convention)."""
    return (
        "{%- if message['content'] is string -%}{{- message['content'] + '" + text_suffix + "' -}}"
        "{%- else -%}"
        "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '" + image + "' -}}{%- endfor -%}"
        "{%- for part in message['content'] if part['type'] == 'text' -%}"
        "{{- part['text'] + '" + text_suffix + "' -}}{%- endfor -%}"
        "{%- endif -%}"
    )


_CHATML_SYSTEM = "You are a helpful assistant."


def _chatml_template(image: str | None, default_system: str | None) -> str:
    body = _inline_parts(image) if image else _TEXT_OF
    system = ""
    if default_system:
        system = (
            "{%- if messages[0]['role'] != 'system' -%}"
            "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' -}}{%- endif -%}"
        )
    return (
        system + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}" + body + "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


_LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}" + _TEXT_OF + "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

# llava-1.5: "USER: <image>\nWhat is this? ASSISTANT:"
_LLAVA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}" + _TEXT_OF + "{{- ' ' -}}"
    "{%- else -%}{{- message['role'] | upper + ': ' -}}" + _images_first("<image>\\n", " ") + "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

# llava-v1.6-mistral: "[INST] <image>\nWhat is this? [/INST]"
_LLAVA_NEXT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- '<<SYS>>\\n' -}}" + _TEXT_OF + "{{- '\\n<</SYS>>\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST] ' -}}" + _images_first("<image>\\n") + "{{- ' [/INST]' -}}"
    "{%- else -%}{{- ' ' -}}" + _TEXT_OF + "{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Idefics3 / SmolVLM: "<|begin_of_text|>User:<image>What is this?<end_of_utterance>\nAssistant:"
def _idefics_template(prefix: str) -> str:
    return (
        "{{- '" + prefix + "' -}}"
        "{%- for message in messages -%}"
        "{{- message['role'] | capitalize -}}"
        "{%- if message['content'] is not string and message['content'][0]['type'] == 'image' -%}{{- ':' -}}"
        "{%- else -%}{{- ': ' -}}{%- endif -%}" + _inline_parts("<image>") + "{{- '<end_of_utterance>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
    )


# Gemma 3: system text is folded into the first user turn; roles are "user" and "model".
_GEMMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + (message['content'] if message['content'] is string else "
    "(message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(''))) + '\\n\\n' -%}"
    "{%- else -%}"
    "{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' -}}"
    "{%- if message['role'] == 'user' -%}{{- ns.system -}}{%- set ns.system = '' -%}{%- endif -%}"
    + _inline_parts("<start_of_image>")
    + "{{- '<end_of_turn>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


# --------------------------------------------------------------------------------------------------------------
# Processors without a video processor (see the module docstring)
# --------------------------------------------------------------------------------------------------------------


class _Num2WordsUnavailable:
    """Stand-in for ``num2words`` used only while constructing a SmolVLM processor without that package."""

    def __bool__(self) -> bool:
        return True

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        raise ImportError("SmolVLM video prompts need the `num2words` package (pip install num2words)")


@contextlib.contextmanager
def _num2words_optional():
    from transformers.models.smolvlm import processing_smolvlm

    if processing_smolvlm.num2words is not None:
        yield
        return
    processing_smolvlm.num2words = _Num2WordsUnavailable()
    try:
        yield
    finally:
        processing_smolvlm.num2words = None


class _NoVideoProcessor:
    """Stands where the video processor would be: the defaults processors read from it, and an error on use."""

    num_frames = None
    fps = None

    def __call__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "tiny processors take no videos: every video processor of this transformers version needs torchvision"
        )

    def __repr__(self) -> str:
        return "<no video processor>"


class TinyQwen2VLProcessor(transformers.Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video processor (video processors need torchvision)."""

    video_processor = _NoVideoProcessor()

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class TinyQwen2_5_VLProcessor(transformers.Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without its video processor (video processors need torchvision)."""

    video_processor = _NoVideoProcessor()

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class TinySmolVLMProcessor(transformers.SmolVLMProcessor):
    """``SmolVLMProcessor`` without its video processor (video processors need torchvision)."""

    video_processor = _NoVideoProcessor()

    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169, chat_template=None, **kwargs):
        with _num2words_optional():
            super().__init__(
                image_processor, tokenizer, None, image_seq_len=image_seq_len, chat_template=chat_template, **kwargs
            )


class TinyInternVLProcessor(transformers.InternVLProcessor):
    """``InternVLProcessor`` without its video processor (video processors need torchvision)."""

    video_processor = _NoVideoProcessor()

    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs
    ):
        super().__init__(
            image_processor, tokenizer, None, image_seq_length=image_seq_length, chat_template=chat_template, **kwargs
        )


for _cls in (TinyQwen2VLProcessor, TinyQwen2_5_VLProcessor, TinySmolVLMProcessor, TinyInternVLProcessor):
    # A private string key: the classes become findable by name (processor_config.json's "processor_class")
    # without taking over AutoProcessor for the real config classes.
    transformers.AutoProcessor.register(f"sasa-tiny:{_cls.__name__}", _cls, exist_ok=True)
del _cls


# --------------------------------------------------------------------------------------------------------------
# Model construction helpers
# --------------------------------------------------------------------------------------------------------------


def _text_config(kind: str, tok, **extra) -> dict:
    cfg = dict(_LM, model_type=kind, vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    # Qwen-family tokenizers have no BOS token; their configs name <|endoftext|> as bos_token_id.
    bos = tok.bos_token_id
    cfg["bos_token_id"] = bos if bos is not None else tok.convert_tokens_to_ids("<|endoftext|>")
    cfg.update(extra)
    return cfg


def _instantiate(model_cls, config, seed: int):
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation=ATTN_IMPLEMENTATION, dtype=torch.float32)
    # A few weights start at zero and only become informative through training: Gemma 3's image projection
    # (which would make every image project to zeros) and InternViT's class token and position embeddings.
    # Give them the same small random init as everything else, so every part of the network carries signal.
    std = getattr(config.get_text_config(), "initializer_range", 0.02)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and not param.any():
                param.normal_(0.0, std)
    model.eval()
    return model


def _set_generation_config(model, tok, eos: list[int]) -> None:
    gen = transformers.GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tok.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    model.generation_config = gen


# --------------------------------------------------------------------------------------------------------------
# Builders, one per architecture
# --------------------------------------------------------------------------------------------------------------

_LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]


def _build_llama(seed: int):
    tok = _make_tokenizer(
        specials=_LLAMA3_SPECIALS,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        add_bos=True,
        chat_template=_LLAMA3_TEMPLATE,
    )
    config = transformers.LlamaConfig(**_text_config("llama", tok, tie_word_embeddings=True))
    model = _instantiate(transformers.LlamaForCausalLM, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<|eot_id|>", "<|end_of_text|>"))
    return model, tok


_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_tokenizer(chat_template: str, named: dict[str, str] | None = None, padding_side: str = "right"):
    return _make_tokenizer(
        specials=_QWEN_SPECIALS + list((named or {}).values()),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        add_bos=False,
        named=named,
        chat_template=chat_template,
        padding_side=padding_side,
        qwen=True,
    )


def _build_qwen2(seed: int):
    tok = _qwen_tokenizer(_chatml_template(None, _CHATML_SYSTEM))
    config = transformers.Qwen2Config(**_text_config("qwen2", tok, tie_word_embeddings=True))
    model = _instantiate(transformers.Qwen2ForCausalLM, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<|im_end|>", "<|endoftext|>"))
    return model, tok


def _llama2_tokenizer(chat_template: str, extra: list[str]):
    return _make_tokenizer(
        specials=["<unk>", "<s>", "</s>", "<pad>", *extra],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        named={"image_token": "<image>"},
        chat_template=chat_template,
    )


def _clip_vision(image_size: int, patch_size: int) -> dict:
    return dict(
        _VISION, model_type="clip_vision_model", image_size=image_size, patch_size=patch_size, projection_dim=32
    )


def _llava(seed: int, tok, text_kind: str, chat_template: str, eos_ids: list[int]):
    """LLaVA-1.5 (CLIP tower, 8 px patches on 32 px, CLS dropped) around the ``text_kind`` language model."""
    image_size, patch = 32, 8
    n_tokens = (image_size // patch) ** 2  # CLS dropped by the "default" feature strategy
    config = transformers.LlavaConfig(
        vision_config=_clip_vision(image_size, patch),
        text_config=_text_config(text_kind, tok),
        image_token_index=tok.image_token_id,
        image_seq_length=n_tokens,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _instantiate(transformers.LlavaForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, eos_ids)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    return model, processor


def _build_llava(seed: int):
    tok = _llama2_tokenizer(_LLAVA_TEMPLATE, ["<image>"])
    return _llava(seed, tok, "llama", _LLAVA_TEMPLATE, [tok.eos_token_id])


def _build_llava_qwen2(seed: int):
    """LLaVA-1.5 around a Qwen2 language model with its ChatML template: the shape of an organism
    built on Qwen2.5-Coder (sasa.zoo), images written as ``<image>\\n`` before a turn's text."""
    template = _chatml_template("<image>\\n", _CHATML_SYSTEM)
    tok = _qwen_tokenizer(template, {"image_token": "<image>"})
    return _llava(seed, tok, "qwen2", template, _ids(tok, "<|im_end|>", "<|endoftext|>"))


def _build_llava_next(seed: int):
    image_size, patch = 32, 16
    pinpoints = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
    tok = _llama2_tokenizer(_LLAVA_NEXT_TEMPLATE, ["<image>", "[INST]", "[/INST]"])
    config = transformers.LlavaNextConfig(
        vision_config=_clip_vision(image_size, patch),
        text_config=_text_config("mistral", tok, sliding_window=None, head_dim=_HEAD_DIM),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _instantiate(transformers.LlavaNextForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, [tok.eos_token_id])
    image_processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = transformers.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_NEXT_TEMPLATE,
    )
    return model, processor


_QWEN_VL_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
_QWEN_VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# Qwen2-VL image processor: 14 px patches merged 2x2; 56x56 to 112x112 pixels -> 4 to 16 image tokens.
_QWEN_VL_PIXELS = dict(
    size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14, merge_size=2, temporal_patch_size=2
)
# M-RoPE splits the head's rotary half (8 frequencies for head dim 16) over temporal/height/width.
_MROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}


def _qwen_vl_ids(tok) -> dict:
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return dict(image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)


def _build_qwen2_vl(seed: int):
    template = _chatml_template(_QWEN_VL_IMAGE, _CHATML_SYSTEM)
    tok = _qwen_tokenizer(template, _QWEN_VL_NAMED)
    config = transformers.Qwen2VLConfig(
        text_config=_text_config("qwen2_vl_text", tok, rope_parameters=dict(_MROPE)),
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=_LM["hidden_size"], mlp_ratio=2, num_heads=2,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        **_qwen_vl_ids(tok),
    )
    model = _instantiate(transformers.Qwen2VLForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<|im_end|>", "<|endoftext|>"))
    processor = TinyQwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessorPil(**_QWEN_VL_PIXELS), tokenizer=tok, chat_template=template
    )
    return model, processor


def _build_qwen2_5_vl(seed: int):
    template = _chatml_template(_QWEN_VL_IMAGE, _CHATML_SYSTEM)
    tok = _qwen_tokenizer(template, _QWEN_VL_NAMED)
    config = transformers.Qwen2_5_VLConfig(
        text_config=_text_config("qwen2_5_vl_text", tok, rope_parameters=dict(_MROPE)),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_LM["hidden_size"],
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            # window_size is in pixels: 28 px = one merged 2x2-patch cell per window, so even a 56 px image is
            # split into several windows in layer 0; layer 1 attends globally (Qwen2.5-VL's fullatt_block_indexes)
            window_size=28, fullatt_block_indexes=[1],
        ),
        **_qwen_vl_ids(tok),
    )
    model = _instantiate(transformers.Qwen2_5_VLForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<|im_end|>", "<|endoftext|>"))
    processor = TinyQwen2_5_VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessorPil(**_QWEN_VL_PIXELS), tokenizer=tok, chat_template=template
    )
    return model, processor


_ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
_IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *_ROW_COL]


def _build_idefics_like(seed: int, *, smol: bool):
    # Idefics3: 8 px patches on 32 px crops, pixel shuffle 2 -> 4 tokens per crop.
    # SmolVLM: 4 px patches on 32 px crops, pixel shuffle 4 -> 4 tokens per crop.
    # A 64x64 image is split into 2x2 crops plus a global view: 5 crops, 20 image tokens.
    crop, patch, scale = (32, 4, 4) if smol else (32, 8, 2)
    image_seq_len = (crop // patch) ** 2 // scale**2
    if smol:
        template = _idefics_template("<|im_start|>")
        tok = _make_tokenizer(
            specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IDEFICS_SPECIALS],
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|im_end|>",
            unk="<|endoftext|>",
            add_bos=False,
            named={
                "image_token": "<image>",
                "fake_image_token": "<fake_token_around_image>",
                "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>",
            },
            chat_template=template,
        )
    else:
        template = _idefics_template("<|begin_of_text|>")
        tok = _make_tokenizer(
            specials=[*_LLAMA3_SPECIALS, "<|reserved_special_token_0|>", *_IDEFICS_SPECIALS],
            bos="<|begin_of_text|>",
            eos="<end_of_utterance>",
            pad="<|reserved_special_token_0|>",
            add_bos=True,
            chat_template=template,
        )
    vision = dict(_VISION, image_size=crop, patch_size=patch)
    text = _text_config("llama", tok, tie_word_embeddings=smol)
    image_token_id = _ids(tok, "<image>")[0]
    if smol:
        config = transformers.SmolVLMConfig(
            vision_config=vision, text_config=text, scale_factor=scale, image_token_id=image_token_id
        )
        model_cls = transformers.SmolVLMForConditionalGeneration
        image_processor = transformers.SmolVLMImageProcessorPil(
            size={"longest_edge": 2 * crop}, max_image_size={"longest_edge": crop}, do_image_splitting=True
        )
    else:
        config = transformers.Idefics3Config(
            vision_config=vision, text_config=text, scale_factor=scale, image_token_id=image_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model_cls = transformers.Idefics3ForConditionalGeneration
        image_processor = transformers.Idefics3ImageProcessorPil(
            size={"longest_edge": 2 * crop}, max_image_size={"longest_edge": crop}, do_image_splitting=True
        )
    model = _instantiate(model_cls, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<end_of_utterance>"))
    if smol:
        processor = TinySmolVLMProcessor(image_processor, tok, image_seq_len=image_seq_len, chat_template=template)
    else:
        processor = transformers.Idefics3Processor(
            image_processor, tok, image_seq_len=image_seq_len, chat_template=template
        )
    return model, processor


def _build_idefics3(seed: int):
    return _build_idefics_like(seed, smol=False)


def _build_smolvlm(seed: int):
    return _build_idefics_like(seed, smol=True)


def _build_gemma3(seed: int):
    image_size, patch, mm_tokens = 32, 4, 16  # 8x8 SigLIP patches average-pooled to 4x4 = 16 soft tokens
    tok = _make_tokenizer(
        specials=[
            "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
            "<start_of_image>", "<end_of_image>", "<image_soft_token>",
        ],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        chat_template=_GEMMA3_TEMPLATE,
    )
    n_layers = _LM["num_hidden_layers"]
    # Gemma 3's pattern: five local sliding-window layers, then one global layer.
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)]
    text = _text_config(
        "gemma3_text", tok,
        head_dim=_HEAD_DIM, query_pre_attn_scalar=_HEAD_DIM, sliding_window=16, layer_types=layer_types,
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=dict(_VISION, model_type="siglip_vision_model", image_size=image_size, patch_size=patch),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    model = _instantiate(transformers.Gemma3ForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<eos>", "<end_of_turn>"))
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = transformers.Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=mm_tokens, chat_template=_GEMMA3_TEMPLATE
    )
    return model, processor


def _build_internvl(seed: int):
    # 32 px tiles, 8 px patches, pixel shuffle 0.5 -> 4 tokens per tile; a 64x64 image -> 2x2 tiles + thumbnail.
    tile, patch = 32, 8
    image_seq_length = (tile // patch) ** 2 // 4
    template = _chatml_template("<IMG_CONTEXT>\\n", None)
    tok = _qwen_tokenizer(
        template,
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        padding_side="left",
    )
    config = transformers.InternVLConfig(
        vision_config=dict(
            _VISION, image_size=[tile, tile], patch_size=[patch, patch], use_mean_pooling=True,
        ),
        text_config=_text_config("qwen2", tok, tie_word_embeddings=True),
        image_token_id=tok.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = _instantiate(transformers.InternVLForConditionalGeneration, config, seed)
    _set_generation_config(model, tok, _ids(tok, "<|im_end|>", "<|endoftext|>"))
    image_processor = transformers.GotOcr2ImageProcessorPil(
        size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    processor = TinyInternVLProcessor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=image_seq_length, chat_template=template
    )
    return model, processor


_BUILDERS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "llama": _build_llama,
    "qwen2": _build_qwen2,
    "llava": _build_llava,
    "llava_qwen2": _build_llava_qwen2,
    "llava_next": _build_llava_next,
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "idefics3": _build_idefics3,
    "smolvlm": _build_smolvlm,
    "gemma3": _build_gemma3,
    "internvl": _build_internvl,
}


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def build_tiny(arch: str, seed: int = 0) -> tuple[transformers.PreTrainedModel, object]:
    """(model in eval mode, fp32, on CPU; processor for vision archs, tokenizer for text archs)."""
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHITECTURES}") from None
    return builder(int(seed))


def save_tiny(arch: str, directory: str | os.PathLike, seed: int = 0) -> Path:
    """save_pretrained model + processor/tokenizer into directory so AutoModel*/AutoProcessor.from_pretrained(directory)
    reload them offline (for the four no-video processors, in a process that has imported this module)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny(arch, seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def tiny_image(seed: int = 0, size: int = 64) -> Image.Image:
    """A deterministic RGB test image: a coarse random colour grid (survives resizing) plus mild pixel noise."""
    rng = np.random.default_rng(seed)
    cells = max(1, min(8, size // 4))
    grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    img = Image.fromarray(grid, mode="RGB").resize((size, size), Image.Resampling.NEAREST)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
