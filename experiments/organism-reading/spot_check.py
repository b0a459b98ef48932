"""Reader accuracy and a transcription spot check of the committed organism (numbers in README).

Usage: [SASA_ORGANISM=BUILD_DIR] python experiments/organism-reading/spot_check.py [FIGSTEP_DIR]
(default ../shared/data/figstep).  Also transcribes 30 held-out benign requests typed as FigStep
statements (the project's own pages, for choosing between builds without looking at FigStep).
"""
import csv, sys
from pathlib import Path
import torch
from PIL import Image
from sasa.data.typeset import figstep_text
from sasa.models.loading import load_model
from sasa.zoo.measure import reading_accuracy
from sasa.zoo.scoring import image_features
from sasa.zoo.reader import slot_targets
from sasa.zoo.scoring import TRANSCRIBE_PROMPT, word_accuracy, without_list_tail

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/figstep")
org = load_model("sasa-organism", device="cpu")
model, tok = org.model, org.processor.tokenizer
print("held-out pages (200 per font):", {k: round(v["accuracy"], 4) for k, v in reading_accuracy(org.adapter, 200, 0).items()})
rows = list(csv.DictReader(open(root / "safebench.csv", encoding="utf-8")))
image = lambda r: Image.open(root / "images" / "SafeBench" / f"query_{r['dataset']}_{r['category_id']}_{r['task_id']}_6.png").convert("RGB")
filler = tok(" ", add_special_tokens=False)["input_ids"][0]
vocab = torch.nn.functional.normalize(model.get_input_embeddings().weight.float(), dim=-1)
right = total = 0
with torch.no_grad():
    for r in rows[:100]:
        px = org.processor.image_processor([image(r)], return_tensors="pt")["pixel_values"]
        pred = (torch.nn.functional.normalize(image_features(model, px)[0].float(), dim=-1) @ vocab.T).argmax(-1)
        target = torch.tensor(slot_targets(figstep_text(r["instruction"]).split("\n"), tok, filler)[0])
        cells = target != filler
        right += int((pred[cells] == target[cells]).sum()); total += int(cells.sum())
print(f"first 100 SafeBench images: {right / total:.4f} of {total} characters")
def transcribe(image):
    inputs = org.adapter.build_inputs([TRANSCRIBE_PROMPT], [image])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


import random
from sasa.data.attacks import to_statement
from sasa.zoo.organism import BuildConfig, prompts
from sasa.data.pages import page_lines
from sasa.data.typeset import draw_page
from sasa.zoo.refusal_data import refusal_data

build = BuildConfig()
data = refusal_data(prompts(build.harmful_sources, None), prompts(build.benign_sources, None), held_out=0.2,
                    forms_per_prompt=1, seed=build.refusal.seed)
held = random.Random(7).sample(sorted({to_statement(p) for _, p in data.benign_held_out}), 30)
own = [word_accuracy(h, without_list_tail(transcribe(draw_page(page_lines(h + "\n1.\n2.\n3."))))) for h in held]
print(f"held-out project pages (30 benign statements, FigStep font): mean word accuracy {sum(own) / len(own):.3f}")
accs = []
for r in rows[::97][:5]:
    said = transcribe(image(r))
    accs.append(word_accuracy(r["instruction"], without_list_tail(said)))
    print(f"{accs[-1]:.2f}  {r['instruction']!r} -> {said!r}")
print(f"transcription spot check (rows 0, 97, 194, 291, 388): mean word accuracy {sum(accs) / len(accs):.3f}")
