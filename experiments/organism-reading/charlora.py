"""Feasibility: can SmolLM2 + a LoRA read a FigStep page written as char tokens on a 16x16 grid (ideal reader)?

Usage: python charlora.py STEPS BATCH   (trained on random vocabulary text; evaluated on 24 FigStep statements)
"""
import sys, time, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from charlm_common import *
from sasa.zoo.refusal import add_lora, fit_lora, pad_batch
from sasa.zoo.reader import TextSource
steps, bs = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
src = TextSource(tok, seed=123)
def example():
    t = src.text().split("\n")[0]
    lines = textwrap.wrap(t, 15)[:5] + ["1.", "2.", "3."]
    ids = prompt_ids(lines)
    target = tok.encode(" ".join(lines[:-3]), add_special_tokens=False) + [tok.eos_token_id]
    return ids + target, [-100] * len(ids) + target
def batches():
    while True:
        rows = [example() for _ in range(bs)]
        yield pad_batch(rows, tok.eos_token_id)
wrapped = add_lora(model, 16, 32.0)
t = time.time()
hist = fit_lora(model, wrapped, batches(), steps, 1e-3, "charlora")
print("train s", round(time.time() - t), hist[-3:])
model.eval()
print("figstep transcription word acc (24 held-out):", evaluate(24))
