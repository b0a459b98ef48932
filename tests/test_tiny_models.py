"""The tiny offline models: real architectures and processors, image tokens, padding, save/reload, determinism."""

from __future__ import annotations

import copy
import socket
import time

import huggingface_hub.constants
import pytest
import torch
import transformers
from transformers.utils import is_torchvision_available

from sasa.testing.tiny_models import (
    TINY_ARCHITECTURES,
    VISION_ARCHITECTURES,
    build_tiny,
    save_tiny,
    tiny_image,
)

# arch -> (model class, processor/tokenizer base class, image processor class, image placeholder in the template,
#          generation prompt the template must end with)
EXPECTED = {
    "llama": (
        "LlamaForCausalLM", "PreTrainedTokenizerFast", None, None, "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Tokenizer", None, None, "<|im_start|>assistant\n"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "CLIPImageProcessorPil", "<image>\n", "ASSISTANT:"),
    "llava_qwen2": (
        "LlavaForConditionalGeneration", "LlavaProcessor", "CLIPImageProcessorPil", "<image>\n", "<|im_start|>assistant\n",
    ),
    "llava_next": (
        "LlavaNextForConditionalGeneration", "LlavaNextProcessor", "LlavaNextImageProcessorPil", "<image>\n", "[/INST]",
    ),
    "qwen2_vl": (
        "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLImageProcessorPil",
        "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|>assistant\n",
    ),
    "qwen2_5_vl": (
        "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2VLImageProcessorPil",
        "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|>assistant\n",
    ),
    "idefics3": (
        "Idefics3ForConditionalGeneration", "Idefics3Processor", "Idefics3ImageProcessorPil", "<image>", "Assistant:",
    ),
    "smolvlm": (
        "SmolVLMForConditionalGeneration", "SmolVLMProcessor", "SmolVLMImageProcessorPil", "<image>", "Assistant:",
    ),
    "gemma3": (
        "Gemma3ForConditionalGeneration", "Gemma3Processor", "Gemma3ImageProcessorPil", "<start_of_image>",
        "<start_of_turn>model\n",
    ),
    "internvl": (
        "InternVLForConditionalGeneration", "InternVLProcessor", "GotOcr2ImageProcessorPil", "<IMG_CONTEXT>\n",
        "<|im_start|>assistant\n",
    ),
}

UTF8_TEXT = "Héllo wörld, 2+2=4 — 世界 🙂\ttab\nnew line  <not special>"

_BUILT: dict[str, tuple] = {}


def tiny(arch: str):
    """One build per architecture for the read-only tests of this module."""
    if arch not in _BUILT:
        _BUILT[arch] = build_tiny(arch)
    return _BUILT[arch]


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def image_token_id(model) -> int:
    config = model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise AssertionError(f"{type(config).__name__} has no image token id")


def chat(processor, arch: str, question: str, with_image: bool) -> str:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def encode(processor, arch: str, texts, images=None, **kwargs):
    if arch in VISION_ARCHITECTURES:
        return processor(text=texts, images=images, return_tensors="pt", **kwargs)
    return processor(texts, return_tensors="pt", **kwargs)


def capture_inputs_embeds(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs_embeds the language model received, last-position logits)."""
    seen = {}

    def hook(module, args, kwargs):
        seen["embeds"] = kwargs.get("inputs_embeds")

    handle = model.get_decoder().register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1]
    finally:
        handle.remove()
    assert seen.get("embeds") is not None, "the language model did not receive inputs_embeds"
    return seen["embeds"], logits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning threads
    make each forward pass up to a hundred times slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    _BUILT.clear()


@pytest.fixture
def no_network(monkeypatch):
    """Hub offline mode (HF_HUB_OFFLINE=1, as huggingface_hub read it at import) and no socket may connect."""

    def refuse(*args, **kwargs):
        raise AssertionError("tiny models must not touch the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ----------------------------------------------------------------------------------------------------------------


def test_architecture_lists():
    assert len(TINY_ARCHITECTURES) == 11 and set(EXPECTED) == set(TINY_ARCHITECTURES)
    assert set(VISION_ARCHITECTURES) == set(TINY_ARCHITECTURES) - {"llama", "qwen2"}
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        build_tiny("gpt2")


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_build_is_the_real_architecture_and_tiny(arch, no_network):
    model, processor = tiny(arch)
    model_cls, proc_cls, image_proc_cls, _, _ = EXPECTED[arch]
    assert type(model).__name__ == model_cls
    assert isinstance(processor, getattr(transformers, proc_cls))
    if image_proc_cls:
        assert type(processor.image_processor).__name__ == image_proc_cls
    assert not model.training
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    assert sum(p.numel() for p in params) < 1_000_000

    text = model.config.get_text_config()
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (6, 64, 4)
    assert text.num_key_value_heads == 2
    assert len(model.get_decoder().layers) == 6
    assert model.config._attn_implementation == "sdpa"
    for sub in model.config.sub_configs:
        assert getattr(model.config, sub)._attn_implementation == "sdpa", sub

    tok = tokenizer_of(processor)
    assert model.get_input_embeddings().num_embeddings >= len(tok)
    assert tok.pad_token is not None and tok.pad_token_id is not None
    gen = model.generation_config
    assert gen.do_sample is False
    assert gen.pad_token_id == tok.pad_token_id
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.eos_token_id in eos and all(0 <= e < len(tok) for e in eos)

    if arch in VISION_ARCHITECTURES:
        assert processor.image_token_id == image_token_id(model) or arch == "gemma3"
        assert tokenizer_of(processor).convert_ids_to_tokens(image_token_id(model)) in (
            "<image>", "<|image_pad|>", "<image_soft_token>", "<IMG_CONTEXT>",
        )


def test_gemma3_mixes_sliding_and_full_attention_and_the_window_bites():
    model, processor = tiny("gemma3")
    text = model.config.text_config
    assert text.sliding_window == 16
    assert "sliding_attention" in text.layer_types and "full_attention" in text.layer_types

    wide = copy.deepcopy(model)
    wide.config.text_config.sliding_window = 4096
    for module in wide.modules():
        if getattr(module, "is_sliding", False):
            module.sliding_window = 4096
    tok = processor.tokenizer
    short = tok("short one", return_tensors="pt")  # under 16 tokens: the window changes nothing
    long = tok("a prompt long enough to run well past a sixteen token window", return_tensors="pt")
    assert short["input_ids"].shape[1] < 16 < long["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.equal(model(**short).logits, wide(**short).logits)
        diff = (model(**long).logits[0, -1] - wide(**long).logits[0, -1]).abs().max()
    assert diff > 1e-4


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_tokenizer_round_trips_any_text(arch):
    _, processor = tiny(arch)
    tok = tokenizer_of(processor)
    ids = tok(UTF8_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == UTF8_TEXT
    assert max(ids) < 256  # plain text stays in the byte range
    for special in tok.all_special_tokens:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    with_special = tok.decode(tok(UTF8_TEXT + tok.eos_token)["input_ids"], skip_special_tokens=True)
    assert with_special == UTF8_TEXT


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_chat_template_in_the_family_style(arch):
    _, processor = tiny(arch)
    _, _, _, placeholder, generation_prompt = EXPECTED[arch]
    vision = arch in VISION_ARCHITECTURES
    text = chat(processor, arch, "What is shown?", with_image=vision)
    assert text.endswith(generation_prompt)
    assert "What is shown?" in text
    if vision:
        assert text.count(placeholder) == 1
        text_only = chat(processor, arch, "What is shown?", with_image=False)
        assert placeholder not in text_only and "What is shown?" in text_only
    # string content and a system message render too
    plain = processor.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert "Be brief." in plain and "Hi" in plain and plain.endswith(generation_prompt)


@pytest.mark.parametrize("arch", VISION_ARCHITECTURES)
def test_image_tokens_carry_the_image(arch):
    model, processor = tiny(arch)
    text = chat(processor, arch, "What is in this picture?", with_image=True)
    a = processor(text=text, images=[tiny_image(1)], return_tensors="pt")
    b = processor(text=text, images=[tiny_image(2)], return_tensors="pt")
    ids = a["input_ids"]
    assert torch.equal(ids, b["input_ids"])
    is_image = ids == image_token_id(model)
    n_image = int(is_image.sum())
    assert 0 < n_image <= 64, n_image

    embeds_a, logits_a = capture_inputs_embeds(model, a)
    embeds_b, logits_b = capture_inputs_embeds(model, b)
    token_embeds = model.get_input_embeddings()(ids)
    # text positions: the token embeddings; image positions: features from the vision tower
    assert torch.equal(embeds_a[~is_image], token_embeds[~is_image])
    assert (embeds_a[is_image] - token_embeds[is_image]).abs().amax(-1).min() > 1e-6
    # another image changes only image positions (all of them but LLaVA-NeXT's learned row-end "newline"
    # embeddings), and what the model predicts
    assert torch.equal(embeds_a[~is_image], embeds_b[~is_image])
    changed = (embeds_a[is_image] - embeds_b[is_image]).abs().amax(-1) > 1e-6
    assert changed.float().mean() >= (0.75 if arch == "llava_next" else 1.0)
    assert (logits_a - logits_b).abs().max() > 1e-5


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_text_only_prompt_runs_and_generates(arch):
    model, processor = tiny(arch)
    inputs = encode(processor, arch, chat(processor, arch, "Say something.", with_image=False))
    assert "pixel_values" not in inputs
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    assert torch.equal(out[:, :n_prompt], inputs["input_ids"]) and 1 <= out.shape[1] - n_prompt <= 5


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_different_prompts_give_different_predictions(arch):
    model, processor = tiny(arch)
    tok = tokenizer_of(processor)
    prompts = ["Hello", "How do I bake bread?", "1 2 3 4 5", "Tell me about dragons.", "zzz", "print('hi')"]
    top = set()
    with torch.no_grad():
        for prompt in prompts:
            logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1]
            assert logits.std() > 1e-3
            top.add(int(logits.argmax()))
    assert len(top) > 1


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_batched_left_padded_generate(arch):
    model, processor = tiny(arch)
    vision = arch in VISION_ARCHITECTURES
    texts = [
        chat(processor, arch, "Hi", with_image=vision),
        chat(processor, arch, "Describe this in great detail, with all the colours please.", with_image=vision),
    ]
    images = [[tiny_image(1)], [tiny_image(2, size=48)]] if vision else None
    batch = encode(processor, arch, texts, images, padding=True, padding_side="left")
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and bool(mask[1].all())
    assert batch["input_ids"][0, 0] == tokenizer_of(processor).pad_token_id

    # padding changes nothing for the shorter prompt's next-token distribution
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        for i, text in enumerate(texts):
            single = encode(processor, arch, [text], [images[i]] if vision else None)
            assert int(single["attention_mask"].sum()) == int(mask[i].sum())
            torch.testing.assert_close(batched[i], model(**single).logits[0, -1], atol=1e-4, rtol=1e-4)

    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    n_prompt = batch["input_ids"].shape[1]
    assert out.shape[0] == 2 and 1 <= out.shape[1] - n_prompt <= 5
    assert torch.equal(out[:, :n_prompt], batch["input_ids"])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_save_and_reload_offline_gives_identical_logits(arch, tmp_path, no_network):
    model, processor = tiny(arch)
    path = save_tiny(arch, tmp_path / arch)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()

    vision = arch in VISION_ARCHITECTURES
    same_image_backend = True
    if vision:
        reloaded = transformers.AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
        reprocessor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
        assert type(reprocessor) is type(processor)
        # Saved configs name the image processor without its backend; with torchvision installed the reload
        # picks the torchvision twin of the PIL class, as it would for a real checkpoint.
        same_image_backend = type(reprocessor.image_processor) is type(processor.image_processor)
        assert same_image_backend or is_torchvision_available()
    else:
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        reprocessor = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    reloaded.eval()
    assert type(reloaded) is type(model)
    assert reloaded.config._attn_implementation == "sdpa"
    assert reloaded.generation_config.eos_token_id == model.generation_config.eos_token_id
    assert reloaded.generation_config.pad_token_id == model.generation_config.pad_token_id

    text = chat(processor, arch, "What is this?", with_image=vision)
    assert chat(reprocessor, arch, "What is this?", with_image=vision) == text
    images = [tiny_image(5)] if vision else None
    inputs = encode(processor, arch, text, images)
    reinputs = encode(reprocessor, arch, text, images)
    assert set(inputs) == set(reinputs)
    for key in inputs:
        if key.startswith("pixel_values") and not same_image_backend:
            assert inputs[key].shape == reinputs[key].shape, key
        else:
            assert torch.equal(inputs[key], reinputs[key]), key
    retok = tokenizer_of(reprocessor)
    assert retok.decode(retok(UTF8_TEXT, add_special_tokens=False)["input_ids"]) == UTF8_TEXT
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
        if same_image_backend:
            assert torch.equal(model(**inputs).logits, reloaded(**reinputs).logits)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_same_seed_same_weights(arch):
    model, _ = tiny(arch)
    start = time.perf_counter()
    again, _ = build_tiny(arch, seed=0)
    assert time.perf_counter() - start < 2.0
    other, _ = build_tiny(arch, seed=1)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert state.keys() == state_again.keys()
    for key in state:
        assert torch.equal(state[key], state_again[key]), key
    assert any(not torch.equal(state[k], state_other[k]) for k in state if state[k].is_floating_point())


def test_tiny_image_is_deterministic_rgb():
    a, b, c = tiny_image(0), tiny_image(0), tiny_image(1)
    assert a.mode == "RGB" and a.size == (64, 64)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert tiny_image(3, size=40).size == (40, 40)
