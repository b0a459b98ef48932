"""The refusal backbone alone (SmolLM2 + the refusal LoRA, no reader, no visual LoRA) on a seeded
sample of the held-out check (numbers in README).

Usage: python experiments/organism-reading/backbone_heldout.py OUT_DIR [SAMPLE=120] [WEIGHTS_DIR]
"""
import json, random, sys
from safetensors.torch import load_file
from sasa.evaluation.runner import Evaluation
from sasa.models.loading import load_model
from sasa.zoo.scoring import rate
from sasa.zoo.organism import BuildConfig, prompts, resources_dir
from sasa.zoo.refusal import merge_factors
from sasa.zoo.refusal_data import FORMS, refusal_data
from sasa.zoo.stages import heldout_form_samples

out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 120
weights = sys.argv[3] if len(sys.argv) > 3 else resources_dir()
loaded = load_model("smollm2-135m", device="cpu")
merge_factors(loaded.model, load_file(f"{weights}/refusal_lora.safetensors"))
b = BuildConfig()
d = refusal_data(prompts(b.harmful_sources, None), prompts(b.benign_sources, None), forms_per_prompt=1)
held = heldout_form_samples(d.harmful_held_out, "harmful", 0) + heldout_form_samples(d.benign_held_out, "benign", 1)
print("held-out prompts (every form):", len(held))
held = random.Random(0).sample(held, n)
records = Evaluation(loaded.adapter, out, batch_size=8, max_new_tokens=32).run(held, ["vanilla"])
for label in ("harmful", "benign"):
    mine = [s for s in held if s.label == label]
    print(label, json.dumps(rate(records, {s.id for s in mine})),
          {f: rate(records, {s.id for s in mine if s.meta["form"] == f})["refusal_rate"] for f in FORMS})
