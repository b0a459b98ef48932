"""The one place that knows each architecture: where its decoder blocks, final norm and unembedding
live, how a chat prompt with an image placeholder is built, and which token ids are image tokens.

Everything else in sasa talks to a model through an :class:`Adapter`. To support a new
architecture, describe it with :func:`register_adapter` (see the README, "Adding a model").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from sasa.models.compat import execution_device

logger = logging.getLogger(__name__)


class UnsupportedModelError(ValueError):
    """No adapter is registered for this architecture."""


@dataclass(frozen=True)
class AdapterSpec:
    """Static description of one architecture family.

    decoder_path: attribute path from the top model to the module that owns ``layers`` and ``norm``.
    takes_images: whether the model has a vision tower.
    image_token_attr: config attribute holding the image placeholder token id.
    nested_images: the processor wants one list of images per sample (Idefics3, SmolVLM, Gemma 3).
    logit_softcap: apply ``text_config.final_logit_softcapping`` after the unembedding.
    attention_output_paths: where, inside a decoder block, the linear layer that maps the
        concatenated heads back to the residual stream is (the first that exists is used).
    families: checkpoints this spec is known to fit (documentation only).
    temporal_patches: the image processor repeats every image over ``temporal_patch_size`` frames
        inside each flattened patch (Qwen2-VL); a pixel attack keeps the copies equal.
    """

    model_type: str
    decoder_path: str
    takes_images: bool
    image_token_attr: str | None = None
    nested_images: bool = False
    logit_softcap: bool = False
    families: tuple[str, ...] = ()
    attention_output_paths: tuple[str, ...] = ("self_attn.o_proj",)
    temporal_patches: bool = False


_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(spec: AdapterSpec, *, overwrite: bool = False) -> None:
    """Make an architecture (keyed by ``config.model_type``) usable by every part of sasa."""
    if spec.model_type in _REGISTRY and not overwrite:
        raise ValueError(f"an adapter for model_type {spec.model_type!r} is already registered")
    _REGISTRY[spec.model_type] = spec


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def _builtin() -> None:
    text = [
        ("llama", ("Llama 2/3", "SmolLM2", "Vicuna")),
        ("qwen2", ("Qwen2", "Qwen2.5")),
        ("qwen3", ("Qwen3",)),
        ("mistral", ("Mistral",)),
        ("gemma2", ("Gemma 2",)),
    ]
    for model_type, fam in text:
        register_adapter(AdapterSpec(model_type, "model", takes_images=False, families=fam))
    register_adapter(
        AdapterSpec("gemma3_text", "model", takes_images=False, logit_softcap=True, families=("Gemma 3 text",))
    )
    vision = [
        AdapterSpec("llava", "model.language_model", True, "image_token_id", families=("LLaVA-1.5",)),
        AdapterSpec("llava_next", "model.language_model", True, "image_token_id", families=("LLaVA-NeXT",)),
        AdapterSpec("qwen2_vl", "model.language_model", True, "image_token_id", families=("Qwen2-VL",),
                    temporal_patches=True),
        AdapterSpec("qwen2_5_vl", "model.language_model", True, "image_token_id", families=("Qwen2.5-VL",),
                    temporal_patches=True),
        AdapterSpec("idefics3", "model.text_model", True, "image_token_id", nested_images=True,
                    families=("Idefics3",)),
        AdapterSpec("smolvlm", "model.text_model", True, "image_token_id", nested_images=True,
                    families=("SmolVLM", "SmolVLM2")),
        AdapterSpec("gemma3", "model.language_model", True, "image_token_id", nested_images=True,
                    families=("Gemma 3 (vision)",)),
        AdapterSpec("internvl", "model.language_model", True, "image_token_id", families=("InternVL3 (HF)",)),
    ]
    for spec in vision:
        register_adapter(spec)


_builtin()


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Adapter:
    """An architecture spec bound to one loaded model and its processor or tokenizer."""

    spec: AdapterSpec
    model: nn.Module
    processor: Any
    _decoder: nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._decoder = _get_path(self.model, self.spec.decoder_path)
            layers = self._decoder.layers
            self._decoder.norm  # noqa: B018 - checks the attribute exists
        except AttributeError as exc:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} does not have the layout the {self.spec.model_type!r} adapter "
                f"expects ({self.spec.decoder_path}.layers / .norm): {exc}"
            ) from None
        if not isinstance(layers, nn.ModuleList):
            raise UnsupportedModelError(f"{self.spec.decoder_path}.layers is not a ModuleList")

    # --- structure ---------------------------------------------------------------------------
    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def layers(self) -> nn.ModuleList:
        return self._decoder.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def final_norm(self) -> nn.Module:
        return self._decoder.norm

    @property
    def unembedding(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def image_token_id(self) -> int | None:
        if not self.spec.image_token_attr:
            return None
        return getattr(self.model.config, self.spec.image_token_attr, None)

    def attention_output(self, layer: int) -> nn.Linear:
        """Block ``layer``'s attention output projection (heads -> residual), by the spec's paths."""
        block = self.layers[layer]
        for path in self.spec.attention_output_paths:
            try:
                module = _get_path(block, path)
            except (AttributeError, UnsupportedModelError):
                continue
            if isinstance(module, nn.Linear):
                return module
        raise LookupError(f"block {layer} ({type(block).__name__}): no attention output projection at "
                          f"{', '.join(self.spec.attention_output_paths)} (set AdapterSpec.attention_output_paths)")

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Last-position logits [B, 1, V] from a block's output [B, T, D], as the model's own head computes them.

        The norm runs over all positions and the unembedding over the last only, like ``logits_to_keep=1``.
        """
        logits = self.unembedding(self.final_norm(hidden)[:, -1:])
        cap = getattr(self.text_config, "final_logit_softcapping", None) if self.spec.logit_softcap else None
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        tid = self.image_token_id
        return None if tid is None else input_ids == tid

    def fingerprint(self) -> dict:
        """What a probe must match: architecture, depth, width, vocabulary."""
        cfg = self.text_config
        return {
            "model_type": self.spec.model_type,
            "architecture": type(self.model).__name__,
            "num_layers": self.num_layers,
            "hidden_size": int(cfg.hidden_size),
            "vocab_size": int(self.unembedding.weight.shape[0]),
        }

    def weights_digest(self, samples_per_tensor: int = 4096) -> str:
        """A cheap hash of the weights (a strided sample of every tensor): runs that resume must be
        made by the same weights, which ``fingerprint`` (shapes only) cannot tell apart."""
        import hashlib

        h = hashlib.blake2b(digest_size=12)
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                flat = t.detach().reshape(-1)
                step = max(1, flat.numel() // samples_per_tensor)
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(flat[::step].to("cpu", torch.float32).numpy().tobytes())
        return h.hexdigest()

    # --- prompts -----------------------------------------------------------------------------
    def build_inputs(
        self,
        prompts: Sequence[str],
        images: Sequence[Any] | None = None,
        system_prompt: str | Sequence[str | None] | None = None,
    ) -> dict:
        """Chat-format a batch (left padded) and run the processor/tokenizer on it; ``system_prompt``
        is one for the whole batch or one (or None) per prompt."""
        if not prompts:
            raise ValueError("no prompts given")
        systems = (list(system_prompt) if isinstance(system_prompt, (list, tuple))
                   else [system_prompt] * len(prompts))
        if len(systems) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(systems)} system prompts")
        images = list(images) if images is not None else [None] * len(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
        for i, (p, img) in enumerate(zip(prompts, images)):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty: a prompt needs text")
            if img is not None and not self.spec.takes_images:
                raise ValueError(
                    f"prompt {i} has an image but {type(self.model).__name__} ({self.spec.model_type}) "
                    "is a text-only model"
                )
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        texts = []
        for p, img, system in zip(prompts, images, systems):
            messages = []
            if system:
                messages.append({"role": "system", "content": self._content(system, None)})
            messages.append({"role": "user", "content": self._content(p, img)})
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        # A template that already writes BOS must not get a second one from the tokenizer.
        bos = getattr(tok, "bos_token", None)
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        if not self.spec.takes_images:
            return dict(tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special))
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True,
                                  "add_special_tokens": add_special}
        present = [img for img in images if img is not None]
        if present:
            if self.spec.nested_images:
                kwargs["images"] = [[img] if img is not None else [] for img in images]
            else:
                kwargs["images"] = present
        if hasattr(self.processor, "padding_side"):
            self.processor.padding_side = "left"
        return dict(self.processor(**kwargs))

    def encode(self, prompts: Sequence[str], images: Sequence[Any] | None = None, **kw: Any) -> dict:
        """:meth:`build_inputs`, moved to the device of the input embeddings (where the forward
        starts: under ``device_map`` that is the first shard, not ``lm_head``'s; offloaded, the device
        it computes on)."""
        device = execution_device(self.model.get_input_embeddings())
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.build_inputs(prompts, images, **kw).items()}

    def _content(self, text: str, image: Any) -> Any:
        if not self.spec.takes_images:
            return text
        parts: list[dict] = []
        if image is not None:
            parts.append({"type": "image"})
        parts.append({"type": "text", "text": text})
        return parts


def fingerprint_differences(made_for: dict, model: dict, what: str) -> list[str]:
    """Every field where a saved artefact's (``what``) model fingerprint differs from this model's."""
    return [f"{k}: {what} {made_for.get(k)!r} vs model {model.get(k)!r}"
            for k in sorted(set(made_for) | set(model)) if made_for.get(k) != model.get(k)]


def get_adapter(model: nn.Module, processor: Any) -> Adapter:
    """Resolve the adapter for a loaded model, or explain how to add one."""
    model_type = getattr(model.config, "model_type", None)
    spec = _REGISTRY.get(model_type)
    if spec is None:
        raise UnsupportedModelError(
            f"no sasa adapter for model_type {model_type!r} ({type(model).__name__}). Supported: "
            f"{', '.join(supported_model_types())}. To add one, call "
            "sasa.models.adapters.register_adapter(AdapterSpec(model_type=..., decoder_path='model.language_model', "
            "takes_images=True, image_token_attr='image_token_id')) before loading; see README 'Adding a model'."
        )
    return Adapter(spec, model, processor)
