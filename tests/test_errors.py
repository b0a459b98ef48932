"""Bad input gets a clear error that names the problem, not a stack trace from inside torch."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import tiny_adapter
from sasa.data.sample import Sample
from sasa.engine import FeatureSpec, SASAEngine
from sasa.engine.samples import SampleError, encode_samples
from sasa.engine.layers import LayerSelection, LayerSelectionError
from sasa.models.adapters import UnsupportedModelError, get_adapter
from sasa.models.loading import load_model
from sasa.testing.tiny_models import tiny_image


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64))


def test_unsupported_architecture_lists_supported_and_how_to_register():
    with pytest.raises(UnsupportedModelError) as err:
        get_adapter(_gpt2(), None)
    msg = str(err.value)
    assert "gpt2" in msg and "llava" in msg and "qwen2_vl" in msg and "register_adapter" in msg


def test_unsupported_architecture_from_directory_fails_before_weights(tmp_path):
    _gpt2().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        load_model(str(tmp_path))


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="gguf"):
        load_model(str(tmp_path / "nothing.gguf"))


@pytest.mark.parametrize("s,f,match", [(2, 6, "out of range"), (-1, 3, "out of range"), (3, 3, "s < f"),
                                       (4, 2, "s < f")])
def test_bad_layers(s, f, match):
    with pytest.raises(LayerSelectionError, match=match):
        SASAEngine(tiny_adapter("llama"), LayerSelection(s, f))


def test_bad_feature_layer():
    with pytest.raises(ValueError, match="feature layer"):
        SASAEngine(tiny_adapter("llama"), LayerSelection(1, 2), features=FeatureSpec("hidden", layer=9))
    with pytest.raises(ValueError, match="needs a layer"):
        FeatureSpec("hidden")


def test_image_given_to_text_only_model():
    eng = SASAEngine(tiny_adapter("qwen2"), LayerSelection(1, 2))
    with pytest.raises(ValueError, match="text-only"):
        eng.encode(["what is this?"], [tiny_image()])


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(prompt):
    eng = SASAEngine(tiny_adapter("llava"), LayerSelection(1, 2))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        eng.encode([prompt])


def test_sample_errors_name_the_sample(tmp_path):
    eng = SASAEngine(tiny_adapter("llava"), LayerSelection(1, 2))
    with pytest.raises(SampleError, match="'s-7'.*not found"):
        encode_samples(eng, [Sample("s-7", "hi", image=str(tmp_path / "missing.png"))])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SampleError, match="'s-8'.*cannot read image"):
        encode_samples(eng, [Sample("s-8", "hi", image=str(bad))])
    text_eng = SASAEngine(tiny_adapter("llama"), LayerSelection(1, 2))
    img = tmp_path / "ok.png"
    tiny_image().save(img)
    with pytest.raises(SampleError, match="'s-9'.*text-only"):
        encode_samples(text_eng, [Sample("s-9", "hi", image=str(img))])


def test_right_padded_batch_is_refused():
    eng = SASAEngine(tiny_adapter("llama"), LayerSelection(1, 2))
    inputs = eng.encode(["a", "a much longer prompt here"])
    right = {"input_ids": inputs["input_ids"].flip(1), "attention_mask": inputs["attention_mask"].flip(1)}
    with pytest.raises(ValueError, match="left padded"):
        eng.prefill(right)
    with pytest.raises(ValueError, match="attention_mask"):
        eng.prefill({"input_ids": torch.ones(1, 3, dtype=torch.long)})
