"""The engine's plan: which blocks each pass runs, as a pure function and as counted block work."""

import pytest

from conftest import tiny_adapter
from sasa.engine import FeatureSpec, SASAEngine, plan_passes
from sasa.engine.layers import LayerSelection

L, S, F = 6, 2, 4


def test_a_risk_score_needs_blocks_up_to_f_plain_and_s_plus_1_onward_projected():
    plan = plan_passes(L, S, F, FeatureSpec())
    assert (plan.last_plain, plan.last_augmented) == (F, L - 1)
    assert plan.skips_plain_tail and plan.augmented_logits and not plan.plain_logits
    assert plan.keep == {S, F} and plan.record_from == S + 1


@pytest.mark.parametrize("feature, captured, plain_logits, augment, expected", [
    (FeatureSpec("logits", projected=False), (), False, False, (L - 1, None)),
    (FeatureSpec("hidden", projected=False, layer=5), (), False, False, (5, None)),
    (FeatureSpec("hidden", projected=True, layer=3), (), False, False, (F, 3)),
    (FeatureSpec("hidden", projected=True, layer=1), (), False, False, (F, None)),
    (FeatureSpec(), (5,), False, False, (5, L - 1)),
    (FeatureSpec(), (), True, False, (L - 1, L - 1)),
    (FeatureSpec("hidden", projected=True, layer=3), (), False, True, (F, L - 1)),
])
def test_the_plan_stops_each_pass_at_the_last_block_it_needs(feature, captured, plain_logits, augment, expected):
    plan = plan_passes(L, S, F, feature, captured, plain_logits, augment)
    assert (plan.last_plain, plan.last_augmented) == expected
    assert set(captured) <= plan.keep


def test_capture_outside_the_model_is_refused():
    with pytest.raises(ValueError, match="capture layer 6 out of range"):
        plan_passes(L, S, F, FeatureSpec(), capture_layers=(6,))


def _attention_calls(adapter, run):
    """How often each block's attention ran during ``run()`` (a skipped block never reaches it)."""
    counts = [0] * adapter.num_layers
    handles = [adapter.attention_output(j).register_forward_hook(
        lambda *a, j=j: counts.__setitem__(j, counts[j] + 1)) for j in range(adapter.num_layers)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return counts


@pytest.mark.parametrize("arch", ["llama", "llava"])
def test_a_score_runs_blocks_0_to_f_once_and_s_plus_1_to_the_end_once_more(arch):
    adapter = tiny_adapter(arch)
    engine = SASAEngine(adapter, LayerSelection(S, F))
    images = None
    if arch == "llava":
        from sasa.testing.tiny_models import tiny_image
        images = [tiny_image(0)]
    inputs = engine.encode(["Describe it."], images)
    counts = _attention_calls(adapter, lambda: engine.prefill(inputs))
    assert counts == [int(j <= F) + int(j > S) for j in range(adapter.num_layers)]


def test_an_answered_prompt_completes_the_plain_pass_without_a_third_prefill():
    adapter = tiny_adapter("llama")
    engine = SASAEngine(adapter, LayerSelection(S, F))
    inputs = engine.encode(["Describe it."])
    counts = _attention_calls(adapter, lambda: engine.generate(inputs, max_new_tokens=1))
    assert counts == [1 + int(j > S) for j in range(adapter.num_layers)]
