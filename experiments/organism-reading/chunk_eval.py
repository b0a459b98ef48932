"""How well does a visual stage read part-way through its chunked build?  Loads the refusal and
reader stages from a build folder, the visual LoRA factors from a chunk checkpoint, and scores
greedy transcription (the project's word accuracy) of held-out project benign requests typed as
FigStep statements (FigStep's font) and, for information, of real SafeBench images.

Usage: python chunk_eval.py BUILD_DIR CHECKPOINT.safetensors [N_HELD_OUT] [N_SAFEBENCH]
(CHECKPOINT may be BUILD_DIR/visual_lora.safetensors: the finished stage.)
"""
import csv
import json
import random
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sasa.data.pages import page_lines, page_text
from sasa.data.typeset import draw_page
from sasa.models.smollm2 import materialise as smollm2_dir
from sasa.zoo import organism
from sasa.zoo.refusal import add_lora
from sasa.zoo.scoring import page_accuracy, transcribe
from sasa.zoo.visual import LIST_TAIL

build, ckpt = Path(sys.argv[1]), Path(sys.argv[2])
n_held = int(sys.argv[3]) if len(sys.argv) > 3 else 40
n_safe = int(sys.argv[4]) if len(sys.argv) > 4 else 20
torch.manual_seed(0)
meta = json.loads((build / "organism.json").read_text())
base = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(smollm2_dir())
finished = ckpt.name == "visual_lora.safetensors"  # a finished stage: its merged factors, not a checkpoint
model, processor = organism.assemble(base, tok, load_file(build / "refusal_lora.safetensors"),
                                     load_file(build / "reader.safetensors"), organism.reader_config(meta, build),
                                     load_file(ckpt) if finished else None)
cfg = organism.BuildConfig.long_reading()
if finished:
    step = meta["visual"].get("ending", {}).get("at", "end")
else:
    wrapped = add_lora(model.model.language_model, cfg.visual.rank, cfg.visual.alpha)
    with safe_open(str(ckpt), framework="pt") as fh, torch.no_grad():
        step = fh.metadata()["step"]
        for name, module in wrapped.items():
            module.lora_a.copy_(fh.get_tensor(f"lora.{name}.a"))
            module.lora_b.copy_(fh.get_tensor(f"lora.{name}.b"))
model.eval()


def read(images):
    return transcribe(model, processor, images, max_new_tokens=40)


def score(refs, hyps):
    return round(100 * sum(map(page_accuracy, refs, hyps)) / len(refs), 1)


texts = organism.heldout_page_texts(cfg, n_held)
hyps = read([draw_page(page_lines(t)) for t in texts])
print(f"step {step}: held-out project statements on FigStep pages: word accuracy {score([page_text(page_lines(t)) for t in texts], hyps)} % (n={len(texts)})")
for t, h in list(zip(texts, hyps))[:3]:
    print("   ", repr(page_text(page_lines(t))), "->", repr(h[:90]))
root = Path("../shared/data/figstep")
if n_safe and root.is_dir():
    from PIL import Image

    rows = list(csv.DictReader(open(root / "safebench.csv", encoding="utf-8")))
    random.Random(0).shuffle(rows)
    rows = rows[:n_safe]
    images = [Image.open(root / "images" / "SafeBench" / f"query_{r['dataset']}_{r['category_id']}_{r['task_id']}_6.png")
              .convert("RGB") for r in rows]
    refs = [page_text(page_lines(r["instruction"] + LIST_TAIL)) for r in rows]
    print(f"step {step}: real SafeBench images (information only): word accuracy {score(refs, read(images))} % "
          f"(n={len(rows)})")
