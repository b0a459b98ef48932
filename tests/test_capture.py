"""The one hook primitive: states equal the model's own hidden states, hooks never outlive the block."""

import pytest
import torch

from conftest import tiny_adapter
from sasa.models import capture as hooks


def _hook_count(adapter):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.model.modules())


def test_capture_equals_output_hidden_states_and_removes_its_hooks():
    adapter = tiny_adapter("llama")
    inputs = adapter.encode(["bake a loaf of bread", "water the plants"])
    with torch.inference_mode():
        adapter.model(**inputs, output_hidden_states=True)  # transformers installs its own recorders once
    before = _hook_count(adapter)
    with torch.inference_mode():
        with hooks.capture(adapter, [1, 3]) as kept, hooks.capture(adapter, [3], last_position=True) as last:
            out = adapter.model(**inputs, output_hidden_states=True)
    assert _hook_count(adapter) == before
    torch.testing.assert_close(kept[1], out.hidden_states[2])  # hidden_states[0] is the embeddings
    torch.testing.assert_close(last[3], out.hidden_states[4][:, -1].float())
    assert set(kept) == {1, 3}


def test_hooks_are_removed_when_the_forward_fails():
    adapter = tiny_adapter("llama")
    inputs = adapter.encode(["bake bread"])
    before = _hook_count(adapter)

    def boom(h):
        raise RuntimeError("inside the forward")

    with pytest.raises(RuntimeError, match="inside the forward"):
        with hooks.replace_output(adapter.layers[2], boom), hooks.capture(adapter, [0]):
            adapter.model(**inputs)
    assert _hook_count(adapter) == before


def test_replace_and_edit_change_the_forward_only_inside_the_block():
    adapter = tiny_adapter("llama")
    inputs = adapter.encode(["bake bread"])
    with torch.inference_mode():
        plain = adapter.model(**inputs).logits
        with hooks.replace_output(adapter.layers[1], lambda h: torch.zeros_like(h)):
            zeroed = adapter.model(**inputs).logits
        with hooks.replace_output(adapter.layers[1], lambda h: None):  # None: leave the forward as it is
            same = adapter.model(**inputs).logits
        with hooks.edit_input(adapter.attention_output(0), lambda x: x * 0):
            no_attention = adapter.model(**inputs).logits
        again = adapter.model(**inputs).logits
    assert not torch.allclose(plain, zeroed) and not torch.allclose(plain, no_attention)
    torch.testing.assert_close(same, plain)
    torch.testing.assert_close(again, plain)


def test_attention_output_paths_come_from_the_adapter_spec():
    from dataclasses import replace

    adapter = tiny_adapter("llama")
    assert adapter.attention_output(0) is adapter.layers[0].self_attn.o_proj
    moved = type(adapter)(replace(adapter.spec, attention_output_paths=("attn.out",)), adapter.model, adapter.processor)
    with pytest.raises(LookupError, match="attn.out"):
        moved.attention_output(0)
