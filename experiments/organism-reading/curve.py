"""How fast does SmolLM2 + a LoRA learn to compose character tokens into words?  A learning curve.

The cheapest form of stage 2's problem: an *ideal* reader (each page cell given as the exact
single-character token, a space as the filler after each line, the compact layout of
``sasa.zoo.visual.compact_cells``), the transcription prompt, and the page text as the answer.  No
image, no tower: only the language model's half.  Trained on the stage-2 text mix (60 % the
project's benign training statements typed as FigStep statements, 40 % ``TextSource``), evaluated
greedily at checkpoints on held-out project benign requests typed as statements (never trained on)
and, for information only, on SafeBench's instructions.

Usage: python curve.py STEPS BATCH EVAL_EVERY [RANK] [LR] [ZIPF_OFFSET]
"""
import json
import random
import sys
import time

import numpy as np
import torch

from sasa.data.render import page_lines, page_text, to_statement
from sasa.models.loading import load_model
from sasa.zoo.organism import BuildConfig, prompts
from sasa.zoo.reader import TextSource
from sasa.zoo.refusal import add_lora, pad_batch
from sasa.zoo.refusal_data import refusal_data
from sasa.zoo.stages import word_accuracy, words
from sasa.zoo.visual import LIST_TAIL, TRANSCRIBE

steps, bs, every = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rank = int(sys.argv[4]) if len(sys.argv) > 4 else 16
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-4
zipf = float(sys.argv[6]) if len(sys.argv) > 6 else 200.0
torch.manual_seed(0)
ad = load_model("smollm2-135m", device="cpu").adapter
tok, model = ad.tokenizer, ad.model
space, nl, eos = tok.encode(" ", add_special_tokens=False)[0], None, tok.eos_token_id
chars = {}
def char_id(c):
    if c not in chars:
        ids = tok.encode(c, add_special_tokens=False)
        chars[c] = ids[0] if len(ids) == 1 else space
    return chars[c]
cfg = BuildConfig()
data = refusal_data(prompts(cfg.harmful_sources, None), prompts(cfg.benign_sources, None), held_out=0.2, seed=0)
train_pool = list(dict.fromkeys(to_statement(p) for p in data.benign))
held = list(dict.fromkeys(to_statement(p) for _, p in data.benign_held_out))
random.Random(1).shuffle(held)
held = [h for h in held if h not in set(train_pool)][:120]
import csv

safebench = [r["instruction"] for r in csv.DictReader(open("/work/shared/data/figstep/safebench.csv", encoding="utf-8"))]
random.Random(0).shuffle(safebench)
safebench = safebench[:60]
pre, post = tok.apply_chat_template([{"role": "user", "content": "<IMG>\n" + TRANSCRIBE}], tokenize=False,
                                    add_generation_prompt=True).split("<IMG>")
PRE, POST = tok.encode(pre, add_special_tokens=False), tok.encode(post, add_special_tokens=False)
def cells(lines):
    out = []
    for line in lines:
        w = line.rstrip()
        if w:
            out += [char_id(c) for c in w[:16]] + ([space] if len(w) < 16 else [])
    return out
def prompt(text):
    return PRE + cells(page_lines(text)) + POST
def target(text):
    return tok.encode(page_text(page_lines(text)), add_special_tokens=False) + [eos]
rng = random.Random(20_000)
source = TextSource(tok, 20_000)
if zipf != 200.0:  # a stream weighted harder towards the frequent (low-rank) words
    ranks = np.arange(len(source.words), dtype=np.float64)
    w = 1.0 / (ranks + zipf); source.cum = np.cumsum(w / w.sum())
def text():
    if rng.random() < 0.6:
        s = rng.choice(train_pool)
        return s + LIST_TAIL if rng.random() < 0.7 else s
    return source.text()
def wacc(ref, hyp):  # the project's word accuracy, on the answer's first len(ref) + 5 words
    return word_accuracy(ref, " ".join(words(hyp)[: len(words(ref)) + 5]))
@torch.no_grad()
def evaluate(texts, n_show=0):
    model.eval(); accs = []
    for k in range(0, len(texts), 40):
        chunk = texts[k:k + 40]
        rows = [prompt(t + LIST_TAIL) for t in chunk]
        width = max(map(len, rows))
        ids = torch.tensor([[eos] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=eos)
        for t, o in zip(chunk, out[:, width:]):
            hyp = tok.decode(o, skip_special_tokens=True)
            accs.append(wacc(t, hyp))
            if n_show and len(accs) <= n_show: print("   ", repr(t), "->", repr(hyp[:90]), flush=True)
    model.train()
    return round(100 * sum(accs) / len(accs), 1)
wrapped = add_lora(model, rank, 2.0 * rank)
params = [p for l in wrapped.values() for p in (l.lora_a, l.lora_b)]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
curve, t0, seen = [], time.time(), 0
def checkpoint(step):
    r = {"step": step, "examples": seen, "minutes": round((time.time() - t0) / 60, 1),
         "held_out": evaluate(held, 2), "safebench": evaluate(safebench)}
    curve.append(r); print(json.dumps(r), flush=True)
checkpoint(0)
model.train()
for step in range(1, steps + 1):
    rows = []
    for _ in range(bs):
        t = text(); p = prompt(t); a = target(t)
        rows.append((p + a, [-100] * len(p) + a))
    b = pad_batch(rows, eos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        labels = b["labels"][:, 1:]
        keep = labels != -100  # the unembedding only where a token is predicted
        logits = model.lm_head(hidden[:, :-1][keep])
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[keep])
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); seen += bs
    if step % 25 == 0: print("step", step, round(loss.item(), 3), round(time.time() - t0), "s", flush=True)
    if step % every == 0: checkpoint(step)
print("CURVE", json.dumps({"rank": rank, "lr": lr, "batch": bs, "zipf": zipf, "curve": curve}))
