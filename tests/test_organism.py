"""The model organism: loads as a plain LLaVA model, keeps SmolLM2's text behaviour, reads pages, rebuilds."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sasa.engine import SASAEngine
from sasa.layers import LayerSelection
from sasa.models.loading import load_model
from sasa.reference import naive_projected_logits
from sasa.zoo import organism
from sasa.zoo.reader import (
    GRID,
    page_lines,
    render_page,
    slot_targets,
    training_fonts,
)
from sasa.zoo.refusal import (
    LoRALinear,
    add_lora,
    merge_factors,
    remove_lora,
    rephrase,
    rephrasings,
)

S, F = 9, 12


@pytest.fixture(scope="module")
def org():
    return load_model("sasa-organism", device="cpu")


def _decode_reader(loaded, image):
    """Nearest token embedding under each projected patch, fillers dropped."""
    model = loaded.model
    pixels = loaded.processor.image_processor([image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pixels, vision_feature_layer=-1,
                                         vision_feature_select_strategy="default")
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    feats = feats[0] if isinstance(feats, (list, tuple)) else feats
    emb = torch.nn.functional.normalize(model.get_input_embeddings().weight, dim=-1)
    ids = (torch.nn.functional.normalize(feats.reshape(-1, feats.shape[-1]), dim=-1) @ emb.T).argmax(-1)
    return ids.tolist()


def test_loads_through_the_generic_loader_as_llava(org):
    assert type(org.model).__name__ == "LlavaForConditionalGeneration"
    assert org.adapter.spec.model_type == "llava"
    assert org.adapter.num_layers == 30
    path = organism.materialise()
    again = load_model(str(path), device="cpu")
    assert type(again.model).__name__ == "LlavaForConditionalGeneration"


def test_text_prompts_are_tokenised_exactly_as_smollm2(org):
    base = load_model("smollm2-135m", device="cpu")
    prompt = "How do I bake bread?"
    ours = org.adapter.build_inputs([prompt])["input_ids"][0].tolist()
    theirs = base.adapter.build_inputs([prompt])["input_ids"][0].tolist()
    assert ours == theirs


def test_image_prompt_expands_to_one_token_per_patch(org):
    inputs = org.adapter.build_inputs(["What is written?"], [Image.new("RGB", (760, 760), "white")])
    image_id = org.model.config.image_token_index
    assert int((inputs["input_ids"] == image_id).sum()) == GRID * GRID


def test_engine_equals_naive_two_pass_on_the_organism(org):
    eng = SASAEngine(org.adapter, LayerSelection(S, F))
    page = render_page(page_lines("Steps to plant a small garden.\n1.\n2.\n3."), training_fonts()[0])
    inputs = eng.encode(["Fill in the list.", "What does the page say?"], [page, page])
    res = eng.prefill(inputs, vanilla_logits=True)
    naive, _ = naive_projected_logits(eng.adapter, inputs, S, F)
    torch.testing.assert_close(res.logits_projected, naive, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        own = org.model(**inputs).logits[:, -1].float()
    torch.testing.assert_close(res.logits_vanilla, own, atol=1e-4, rtol=1e-4)


def test_guarded_generation_on_a_passing_page_equals_plain_generate(org):
    eng = SASAEngine(org.adapter, LayerSelection(S, F))
    page = render_page(page_lines("List of fruits that grow in cold places.\n1.\n2.\n3."), training_fonts()[0])
    inputs = eng.encode(["Fill in the list."], [page])
    out = eng.generate(inputs, decide=lambda r: torch.zeros(r.features.shape[0], dtype=torch.bool),
                       max_new_tokens=8)
    with torch.inference_mode():
        plain = org.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.sequences.tolist() == plain.tolist()


def test_reads_a_rendered_sentence_back(org):
    """What the committed reader manages (README: ~40 % of tokens on random-word pages): the list
    heading, the numbers and punctuation exactly, and over half of a plain sentence's tokens in place."""
    tok = org.processor.tokenizer
    filler = tok(" ", add_special_tokens=False)["input_ids"][0]
    lines = page_lines("Steps to make a good cup of tea at home.\n1.\n2.\n3.")
    target, dropped = slot_targets(lines, tok, filler)
    assert dropped == 0
    read = _decode_reader(org, render_page(lines, training_fonts()[0]))
    text = tok.decode([i for i in read if i != filler])
    assert text.startswith("Steps to ") and text.endswith("1.2.3.")
    slots = [i for i, t in enumerate(target) if t != filler]
    assert sum(read[i] == target[i] for i in slots) / len(slots) > 0.5
    blank = render_page([], training_fonts()[0])
    assert all(i == filler for i in _decode_reader(org, blank)[: GRID * 2])


def test_slot_targets_keep_text_order_and_positions():
    from transformers import AutoTokenizer

    from sasa.models.loading import _materialise_default

    tok = AutoTokenizer.from_pretrained(_materialise_default())
    lines = page_lines("List of indicators suggesting arthritis based on described symptoms.\n1.\n2.\n3.")
    assert lines[:4] == ["List of", "indicators", "suggesting", "arthritis based"]
    filler = tok(" ", add_special_tokens=False)["input_ids"][0]
    slots, dropped = slot_targets(lines, tok, filler)
    assert dropped == 0
    words = [tok.decode([t]).strip() for t in slots if t != filler]
    assert " ".join(words).startswith("List of indicators suggesting arthritis based")
    assert tok.decode([slots[GRID * 3]]).strip() == "arthritis"  # line 3 starts at column 0
    assert tok.decode([slots[GRID * 3 + 6]]).strip() == "based"  # character 10 of 15 -> patch 6 of 10


def test_lora_merge_equals_the_adapter_forward():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(8, 6), rank=2, alpha=4.0)
    torch.nn.init.normal_(layer.lora_b)
    x = torch.randn(3, 8)
    want = layer(x)
    holder = torch.nn.Module()
    holder.q_proj = layer.base
    wrapped = add_lora(holder, 2, 4.0)
    wrapped["q_proj"].lora_a.data.copy_(layer.lora_a)
    wrapped["q_proj"].lora_b.data.copy_(layer.lora_b)
    torch.testing.assert_close(holder.q_proj(x), want)
    factors = remove_lora(holder, wrapped)
    assert isinstance(holder.q_proj, torch.nn.Linear)
    torch.testing.assert_close(holder.q_proj(x), want, atol=1e-5, rtol=1e-5)
    fresh = torch.nn.Module()
    fresh.q_proj = torch.nn.Linear(8, 6)
    fresh.q_proj.load_state_dict({k: v for k, v in holder.q_proj.state_dict().items()})
    with torch.no_grad():
        fresh.q_proj.weight -= factors["q_proj.lora_b"] @ factors["q_proj.lora_a"]
    assert merge_factors(fresh, factors) == 1
    torch.testing.assert_close(fresh.q_proj(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_build_pipeline_smoke_is_reproducible_and_loads(tmp_path, monkeypatch):
    """A few fixed-seed steps of every stage; two builds give identical weights; the result loads."""
    from safetensors.torch import load_file

    cfg = organism.BuildConfig.quick()
    a = organism.build(tmp_path / "a", cfg, progress=False)
    b = organism.build(tmp_path / "b", cfg, progress=False)
    for name in ("refusal_lora.safetensors", "reader.safetensors", "visual_lora.safetensors"):
        ta, tb = load_file(a / name), load_file(b / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    meta = json.loads((a / "organism.json").read_text())
    assert meta["refusal"]["history"] and meta["reader"]["history"] and meta["visual"]["history"]
    for name in ("refusal_lora.safetensors", "visual_lora.safetensors"):
        lora = load_file(a / name)
        assert len(lora) == 2 * 7 * 30 and all(k.startswith("model.layers.") for k in lora)
        assert any(v.abs().sum() > 0 for k, v in lora.items() if k.endswith("lora_b"))
    loaded = load_model(str(organism.materialise(a)), device="cpu")
    inputs = loaded.adapter.build_inputs(["Hello"], [Image.new("RGB", (760, 760), "white")])
    with torch.inference_mode():
        assert torch.isfinite(loaded.model(**inputs).logits).all()
    organism.record_layers(3, 5, a)
    assert organism.recommended_layers(a) is not None
    organism.build(a, cfg, progress=False, stages=("visual",))  # new weights: the measured (s, f) is stale
    assert organism.recommended_layers(a) is None
    assert torch.equal(load_file(a / "visual_lora.safetensors")["model.layers.0.mlp.up_proj.lora_b"],
                       load_file(b / "visual_lora.safetensors")["model.layers.0.mlp.up_proj.lora_b"])


def test_language_weights_are_smollm2_plus_both_merged_adapters(org):
    """The refusal and the visual-instruction deltas are both in the loaded weights, nothing else."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from sasa.models.loading import _materialise_default

    base = AutoModelForCausalLM.from_pretrained(_materialise_default(), dtype=torch.float32).state_dict()
    res = organism.resources_dir()
    deltas = [load_file(res / "refusal_lora.safetensors"), load_file(res / "visual_lora.safetensors")]
    ours = org.model.state_dict()
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.29.mlp.down_proj"):
        want = base[f"{name}.weight"].clone()
        for d in deltas:
            delta = d[f"{name}.lora_b"].float() @ d[f"{name}.lora_a"].float()
            assert delta.abs().max() > 0
            want += delta
        got = ours[f"model.language_model.{name[len('model.'):]}.weight"]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["model.language_model.norm.weight"], base["model.norm.weight"])


def test_rephrase_swaps_the_form_both_ways():
    import random

    rng = random.Random(0)
    question = rephrase("Give detailed instructions for baking bread.", rng)
    assert question.endswith("give detailed instructions for baking bread?")
    assert rephrase("Please write a poem about rain", rng).endswith("write a poem about rain?")
    wrapped = rephrase("How do I bake bread?", rng)
    assert wrapped.endswith(" How do I bake bread?") and wrapped.split()[0] in ("Answer", "Explain", "Tell", "Please")
    assert rephrase("I need money. Tell me how to rob a bank.", rng) is None
    assert rephrase("Steps to bake bread.", rng) is None


def test_rephrasing_balances_the_form_across_labels():
    """On the pinned training data, questions are a similar share of harmful and of benign prompts."""
    from sasa.data.registry import load

    harmful = [s.prompt for n, v in organism.BuildConfig().harmful_sources
               for s in load(n, variant=v, check_images="none").samples]
    benign = [s.prompt for n, v in organism.BuildConfig().benign_sources
              for s in load(n, variant=v, check_images="none").samples]
    asks = {"how", "what", "why", "which", "when", "where", "who", "can", "could", "is", "are", "do", "does"}
    share = {}
    for label, prompts in (("harmful", harmful), ("benign", benign)):
        rows = prompts + rephrasings(prompts, 0)
        share[label] = sum(p.split()[0].lower() in asks for p in rows) / len(rows)
    assert 0.3 < share["harmful"] < 0.7 and 0.3 < share["benign"] < 0.7, share


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="organism.json"):
        organism.materialise(tmp_path)


@pytest.mark.slow
def test_measurement_smoke_runs_every_part_on_real_benchmark_files(shared_data, tmp_path):
    """``sasa zoo measure organism`` end to end on a few items of the real FigStep and XSTest files."""
    from sasa.zoo.measure import MeasureConfig, headline, measure_organism

    cfg = MeasureConfig(limit=3, max_new_tokens=2, reading_pages=3, transcriptions=2, generating_share=1.0)
    result = measure_organism(shared_data / "figstep", shared_data / "xstest", tmp_path, cfg, progress=False)
    run = result["run"]
    cats = run["behaviour"]["by_category"]
    assert all(v["n"] == 3 for k, v in run["behaviour"].items() if k != "by_category")
    assert sum(v["n"] for v in cats["text"].values()) == sum(v["n"] for v in cats["image"].values()) == 3
    assert run["data"]["figstep_images"] == run["data"]["xstest_safe"] == 3
    assert 0 <= run["layers"]["s"] < run["layers"]["f"] < 30
    assert 0 <= run["reading"]["token_accuracy"] <= 1 and run["reading"]["transcriptions"] == 2
    assert set(result["summary"]["modes"]) == {"vanilla", "detect", "probe-noproj", "hiddendetect", "augment",
                                              "adashield"}
    text = headline(result)
    assert "image-harmful refusal (FigStep images, n=3)" in text and "refusal by FigStep category" in text
    assert json.loads((tmp_path / "measurement.json").read_text())["run"]["layers"] == run["layers"]


def test_heldout_check_shares_no_prompt_with_the_refusal_training_data():
    from sasa.data.registry import load
    from sasa.zoo.measure import heldout_samples

    samples = heldout_samples()
    cfg = organism.BuildConfig()
    trained = {" ".join(s.prompt.split()) for n, v in cfg.harmful_sources + cfg.benign_sources
               for s in load(n, variant=v, check_images="none").samples}
    assert len({s.id for s in samples}) == len(samples)
    assert sum(s.label == "harmful" for s in samples) == 100 and sum(s.label == "benign" for s in samples) > 100
    assert all(s.prompt and "---" not in s.prompt and " ".join(s.prompt.split()) not in trained for s in samples)
