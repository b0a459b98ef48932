"""A model dispatched by accelerate over a device map (here CPU plus disk offload: every offloaded
block's weights come from disk through accelerate's hooks at each call) gives the same SASA scores,
projected logits and guarded answers as the same model in one piece."""

import json

import pytest
import torch

from sasa.engine import SASAEngine
from sasa.guard.generation import Guard
from sasa.engine.layers import LayerSelection
from sasa.models.loading import load_model
from sasa.engine.reference import naive_projected_logits
from sasa.testing.tiny_models import save_tiny, tiny_image

PROMPTS = ["Describe the picture.", "How do I zorp the vault?"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    path = save_tiny("llava", root / "model")
    whole = load_model(str(path), device="cpu", dtype="float32")
    layers = whole.adapter.num_layers
    device_map = {"model.vision_tower": "cpu", "model.multi_modal_projector": "disk",
                  "model.language_model.embed_tokens": "disk", "model.language_model.norm": "cpu",
                  "model.language_model.rotary_emb": "cpu", "lm_head": "disk"}
    device_map.update({f"model.language_model.layers.{i}": ("disk" if i % 2 else "cpu") for i in range(layers)})
    split = load_model(str(path), dtype="float32", device_map=device_map, offload_folder=str(root / "offload"))
    return whole, split, device_map


def _inputs(adapter):
    images = [tiny_image(1), tiny_image(2)]
    return adapter.encode(PROMPTS, images)


def test_the_map_really_offloads(models):
    _, split, device_map = models
    assert "disk" in set(device_map.values()) and hasattr(split.model, "hf_device_map")
    offloaded = split.model.model.language_model.layers[1]
    assert offloaded.self_attn.q_proj.weight.device.type == "meta"  # its weights live on disk between calls


@pytest.mark.parametrize("s,f", [(1, 4), (2, 3)])
def test_dispatched_model_scores_and_projects_like_the_whole_one(models, s, f):
    whole, split, _ = models
    results = []
    for loaded in (whole, split):
        engine = SASAEngine(loaded.adapter, LayerSelection(s, f))
        inputs = _inputs(loaded.adapter)
        results.append((engine.prefill(inputs, vanilla_logits=True), inputs, loaded.adapter))
    (a, _, _), (b, inputs, adapter) = results
    torch.testing.assert_close(b.features, a.features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.logits_vanilla, a.logits_vanilla, atol=1e-5, rtol=1e-5)
    naive, _ = naive_projected_logits(adapter, inputs, s, f)  # the plain definition, on the dispatched model
    torch.testing.assert_close(b.logits_projected, naive.to(b.logits_projected.device), atol=1e-5, rtol=1e-5)


def test_dispatched_guarded_generation_equals_the_whole_model(models):
    whole, split, _ = models
    outs = []
    for loaded in (whole, split):
        guard = Guard(loaded.adapter, "augment", engine=SASAEngine(loaded.adapter, LayerSelection(1, 4)))
        outs.append([o.text for o in guard.generate_inputs(_inputs(loaded.adapter), 6)])
        plain = Guard(loaded.adapter, "vanilla").generate_inputs(_inputs(loaded.adapter), 6)
        outs.append([o.text for o in plain])
    assert outs[0] == outs[2] and outs[1] == outs[3]


def test_cli_reads_an_explicit_device_map(tmp_path):
    from sasa.cli import UsageError, _device_map

    path = tmp_path / "map.json"
    path.write_text(json.dumps({"lm_head": "cpu"}))
    assert _device_map(str(path)) == {"lm_head": "cpu"}
    assert _device_map('{"model": 0}') == {"model": 0}
    assert _device_map("auto") == "auto"
    with pytest.raises(UsageError, match="not a JSON device map"):
        _device_map("{nope")
