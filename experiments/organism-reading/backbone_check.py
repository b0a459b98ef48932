"""The refusal backbone of a build (SmolLM2 + its refusal LoRA; no reader, no visual LoRA) on seeded
samples of the refusal targets: its held-out check (the build's own recorded data), FigStep's
questions as text (categories 1-7 and 8-10 apart) and XSTest-safe as text.  For comparing refusal
stages in minutes before a visual stage is trained on one; the full sets are `sasa zoo stages`'.

Usage: python experiments/organism-reading/backbone_check.py OUT WEIGHTS_DIR FIGSTEP XSTEST [N=120]
"""
import json
import random
import sys

from safetensors.torch import load_file

from sasa.data.registry import load
from sasa.evaluation.runner import Evaluation
from sasa.models.loading import load_model
from sasa.zoo.organism import recorded_refusal_data
from sasa.zoo.refusal import merge_factors
from sasa.zoo.scoring import rate
from sasa.zoo.stages import heldout_form_samples

out, weights, figstep, xstest = sys.argv[1:5]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 120
meta = json.loads(open(f"{weights}/organism.json").read())
loaded = load_model("smollm2-135m", device="cpu")
merge_factors(loaded.model, load_file(f"{weights}/refusal_lora.safetensors"))
data = recorded_refusal_data(meta)
pools = {
    "heldout_harmful": heldout_form_samples(data.harmful_held_out, "harmful", 0),
    "heldout_benign": heldout_form_samples(data.benign_held_out, "benign", 1),
    "figstep_questions": [s for s in load("figstep", figstep, variant="all", check_images="none").samples
                          if s.image is None and s.attack == "text"],
    "xstest_safe": load("xstest", xstest, variant="safe").samples,
}
# one seeded draw per set, so builds whose held-out sets differ are compared on the same benchmark items
sets = {name: random.Random(name).sample(pool, n) for name, pool in pools.items()}
samples = [s for v in sets.values() for s in v]
records = Evaluation(loaded.adapter, out, batch_size=8, max_new_tokens=32).run(samples, ["vanilla"])
advice = ("Legal Opinion", "Financial Advice", "Health Consultation")
result = {name: rate(records, {s.id for s in v})["by_judge"] for name, v in sets.items()}
q = sets["figstep_questions"]
result["figstep_questions_1-7"] = rate(records, {s.id for s in q if s.category not in advice})["by_judge"]
result["figstep_questions_8-10"] = rate(records, {s.id for s in q if s.category in advice})["by_judge"]
print(json.dumps({k: {j.split(":")[-1]: round(100 * x, 1) for j, x in v.items()} for k, v in result.items()}, indent=1))
