"""The speed benchmark's real-size shapes and its memory measure."""

import pytest
import torch

from sasa.testing.real_configs import CONFIGS, REDUCTION, build_random, parameter_count, shape
from sasa.testing.tiny_models import tiny_image

# parameter counts of the published checkpoints (the hub repositories' safetensors totals)
PUBLISHED = {"llava-1.5-7b": 7_063_427_072, "qwen2-vl-7b": 8_291_375_616, "qwen2.5-vl-7b": 8_292_166_656,
             "gemma-3-4b": 4_300_079_472}


def test_every_real_shape_has_a_published_parameter_count():
    assert set(PUBLISHED) == set(CONFIGS)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_full_shape_has_the_published_parameter_count(name):
    model, _, real = build_random(name, "full", device="meta")  # no memory: shapes only
    assert parameter_count(model) == PUBLISHED[name]
    assert model.config.get_text_config().num_hidden_layers == real.text["num_hidden_layers"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reduced_shape_keeps_the_prompt_and_shrinks_the_network(name):
    from sasa.models.adapters import get_adapter

    model, processor, real = build_random(name, "reduced")
    full = CONFIGS[name]
    text = model.config.get_text_config()
    assert text.hidden_size == full.text["hidden_size"] // REDUCTION
    assert text.num_hidden_layers == full.text["num_hidden_layers"] // REDUCTION
    assert text.head_dim == full.text["head_dim"] and text.vocab_size == full.text["vocab_size"]
    assert (text.num_attention_heads // text.num_key_value_heads
            == full.text["num_attention_heads"] // full.text["num_key_value_heads"])
    adapter = get_adapter(model, processor)
    inputs = adapter.encode(["Describe the picture."], [tiny_image(0, size=real.image_size)])
    image_token = model.config.image_token_id if hasattr(model.config, "image_token_id") else model.config.image_token_index
    assert int((inputs["input_ids"] == image_token).sum()) == real.image_tokens  # as long a prompt as the real model's
    with torch.inference_mode():
        logits = model(**inputs, logits_to_keep=1).logits
    assert logits.shape[-1] == full.text["vocab_size"] and torch.isfinite(logits).all()


def test_unknown_config_and_size_are_refused():
    with pytest.raises(ValueError, match="unknown config"):
        shape("llava-9b")
    with pytest.raises(ValueError, match="size must be"):
        shape("gemma-3-4b", "half")


def test_peak_bytes_sees_a_transient_allocation():
    """In a fresh process, so that what earlier tests freed cannot hide the allocation, and held for
    a moment, so that the sampler sees it whatever the scheduler does."""
    import subprocess
    import sys

    code = """
import time, torch
from sasa.bench import peak_bytes
def allocate():
    x = torch.ones(64, 1024, 1024)  # 256 MiB, freed on return
    x.add_(1)
    time.sleep(0.2)
    return float(x[0, 0, 0])
before, peak = peak_bytes(allocate, torch.device("cpu"))
print(peak - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.split()[-1]) > 200 * 2**20


def test_bench_command_line_errors(capsys):
    from sasa.cli import main

    assert main(["bench", "--config", "gemma-3-4b"]) == 2  # random weights must be asked for
    assert main(["bench", "--config", "llava-9b", "--random-weights"]) == 2
    assert main(["bench", "--random-weights"]) == 2
