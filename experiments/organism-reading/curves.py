"""Which stage-2 recipe teaches SmolLM2 to read a page fastest?  Learning curves on one budget.

The language model's half of the visual stage, with an *ideal* reader (no image, no tower): each
candidate trains a LoRA for the same wall-clock budget on one thread, and is evaluated greedily at
doubling example counts on 60 held-out project benign requests typed as FigStep statements
(never trained on), scored with the project's transcription word accuracy; SafeBench's
instructions (60, seeded) for information only.  The table keeps the points, the seconds of
training behind each, and a least-squares fit ``acc = a + b * log2(training seconds)``
extrapolated to the build's 8-hour budget.

Candidates (what the ideal reader hands the language model, and what it trains on):

* ``pages``: stage 2 as committed -- character tokens in the compact page layout, 60 % project
  benign statements / 40 % random-vocabulary pages (``TextSource``), LoRA rank 16, lr 1e-3;
* ``dense``: the same spelling, but each example is a long run of spelled lines (up to 40 lines of
  15 characters) of the same text mix: several times more words per token of prompt overhead;
* ``wordfreq``: pages whose random words follow English word frequency (``wordfreq``'s top
  20 000, Zipf-weighted by rank) instead of the tokenizer's vocabulary;
* ``rank64``: ``pages`` with LoRA rank 64 and lr 2e-3 (more trainable capacity);
* ``words``: the page as the language model's *own tokens* -- each token of the page text placed
  at the cell where its first character is, fillers elsewhere: what a lexicon composer in the
  tower would hand over.  The language model's half of that route (the tower's half is a
  separate question).

Usage: python curves.py CANDIDATE MINUTES [OUT.json]   (from the repository root, package installed)
"""
import csv
import json
import math
import random
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from sasa.data.attacks import to_statement
from sasa.data.pages import page_lines, page_text
from sasa.models.loading import load_model
from sasa.zoo.organism import BuildConfig, prompts
from sasa.zoo.reader import TextSource, english_words
from sasa.zoo.refusal import add_lora, pad_batch
from sasa.zoo.refusal_data import refusal_data
from sasa.zoo.scoring import page_accuracy, words
from sasa.zoo.visual import LIST_TAIL, TRANSCRIBE

CANDIDATES = {
    "pages": dict(rank=16, lr=1e-3, batch=16, layout="chars", text="mix", lines=10),
    "dense": dict(rank=16, lr=1e-3, batch=4, layout="chars", text="mix", lines=40),
    "wordfreq": dict(rank=16, lr=1e-3, batch=16, layout="chars", text="wordfreq", lines=10),
    "rank64": dict(rank=64, lr=2e-3, batch=16, layout="chars", text="mix", lines=10),
    "words": dict(rank=16, lr=1e-3, batch=16, layout="words", text="mix", lines=10),
}
name, minutes = sys.argv[1], float(sys.argv[2])
out_path = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(f"curve-{name}.json")
cand = CANDIDATES[name]
torch.manual_seed(0)
torch.set_num_threads(1)
ad = load_model("smollm2-135m", device="cpu").adapter
tok, model = ad.tokenizer, ad.model
space, eos = tok.encode(" ", add_special_tokens=False)[0], tok.eos_token_id
char_ids: dict[str, int] = {}


def char_id(c):
    if c not in char_ids:
        ids = tok.encode(c, add_special_tokens=False)
        char_ids[c] = ids[0] if len(ids) == 1 else space
    return char_ids[c]


cfg = BuildConfig()
data = refusal_data(prompts(cfg.harmful_sources, None), prompts(cfg.benign_sources, None), held_out=0.2, seed=0)
train_pool = list(dict.fromkeys(to_statement(p) for p in data.benign))
held = list(dict.fromkeys(to_statement(p) for _, p in data.benign_held_out))
random.Random(1).shuffle(held)
held = [h for h in held if h not in set(train_pool)][:60]
safebench = [r["instruction"] for r in csv.DictReader(open("../shared/data/figstep/safebench.csv", encoding="utf-8"))]
random.Random(0).shuffle(safebench)
safebench = safebench[:60]
pre, post = tok.apply_chat_template([{"role": "user", "content": "<IMG>\n" + TRANSCRIBE}], tokenize=False,
                                    add_generation_prompt=True).split("<IMG>")
PRE, POST = tok.encode(pre, add_special_tokens=False), tok.encode(post, add_special_tokens=False)


def all_lines(text, limit):
    out = []
    for part in text.split("\n"):
        out.extend(textwrap.wrap(part, 15) or [""])
    return out[:limit]


def chars_cells(lines):
    out = []
    for line in lines:
        w = line.rstrip()
        if w:
            out += [char_id(c) for c in w[:16]] + ([space] if len(w) < 16 else [])
    return out


def word_cells(lines):
    """Each token of the page text at the cell of its first non-space character, fillers elsewhere."""
    kept = [line.rstrip()[:16] for line in lines if line.strip()]
    joined = " ".join(kept)
    cells = [space] * len(joined)  # one cell per character of the joined text (line breaks = the space)
    enc = tok(joined, add_special_tokens=False, return_offsets_mapping=True)
    for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        while a < b and joined[a] == " ":
            a += 1
        if a < len(cells):
            cells[a] = t
    return cells + [space]


cells = word_cells if cand["layout"] == "words" else chars_cells


def prompt(lines):
    return PRE + cells(lines) + POST


def target(lines):
    return tok.encode(page_text(lines), add_special_tokens=False) + [eos]


rng = random.Random(20_000)
source = TextSource(tok, 20_000)
if cand["text"] == "wordfreq":
    source.use_words(english_words())  # wordfreq's top 20 000, Zipf-weighted by rank (offset 10)


def one_text():
    if rng.random() < 0.6:
        s = rng.choice(train_pool)
        return s + LIST_TAIL if rng.random() < 0.7 else s
    return source.text()


def example_lines():
    lines = []
    while len(lines) < cand["lines"]:
        lines += all_lines(one_text(), cand["lines"])
        if cand["lines"] <= 10:
            break
    return lines[: cand["lines"]]


@torch.no_grad()
def evaluate(texts, n_show=0):
    model.eval()
    accs = []
    for k in range(0, len(texts), 40):
        chunk = texts[k:k + 40]
        rows = [prompt(page_lines(t + LIST_TAIL)) for t in chunk]
        width = max(map(len, rows))
        ids = torch.tensor([[eos] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32, do_sample=False,
                             pad_token_id=eos)
        for t, o in zip(chunk, out[:, width:]):
            hyp = tok.decode(o, skip_special_tokens=True)
            accs.append(page_accuracy(page_text(page_lines(t + LIST_TAIL)), hyp))
            if n_show and len(accs) <= n_show:
                print("   ", repr(t), "->", repr(hyp[:90]), flush=True)
    model.train()
    return round(100 * sum(accs) / len(accs), 1)


wrapped = add_lora(model, cand["rank"], 2.0 * cand["rank"])
params = [p for lora in wrapped.values() for p in (lora.lora_a, lora.lora_b)]
opt = torch.optim.AdamW(params, lr=cand["lr"], weight_decay=0.0)
curve, trained_s, seen, words_seen = [], 0.0, 0, 0
next_eval = 32


def checkpoint(step, final=False):
    r = {"step": step, "examples": seen, "words": words_seen, "train_s": round(trained_s, 1),
         "held_out": evaluate(held, 2)}
    if final:
        r["safebench"] = evaluate(safebench)
    curve.append(r)
    print(json.dumps(r), flush=True)


model.train()
step = 0
while trained_s < 60 * minutes:
    t0 = time.time()
    rows = []
    for _ in range(cand["batch"]):
        lines = example_lines()
        p, a = prompt(lines), target(lines)
        words_seen += len(words(page_text(lines)))
        rows.append((p + a, [-100] * len(p) + a))
    b = pad_batch(rows, eos)
    hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    labels = b["labels"][:, 1:]
    keep = labels != -100  # the unembedding only where a token is predicted
    loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][keep]), labels[keep])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    step += 1
    seen += cand["batch"]
    trained_s += time.time() - t0
    if step % 25 == 0:
        print("step", step, round(loss.item(), 3), round(trained_s), "s", flush=True)
    if seen >= next_eval:
        checkpoint(step)
        next_eval *= 2
if curve and curve[-1]["step"] == step:
    curve.pop()
checkpoint(step, final=True)
def power_law_fit(curve, budget_s=8 * 3600 * 1.6):
    """The held-out error as a power of training time, ``log(1 - acc) = a + b log2(s)``, on the last
    four points, extrapolated to the build's budget: 8 h on 2 cores, taken as 1.6 threads' worth of
    this one-thread rate."""
    pts = [(math.log2(r["train_s"]), math.log(max(1e-3, 1 - r["held_out"] / 100))) for r in curve
           if r["train_s"] > 0][-4:]
    if len(pts) < 2:
        return None
    b, a = np.polyfit([x for x, _ in pts], [y for _, y in pts], 1)
    return {"error_factor_per_doubling": round(float(math.exp(b)), 3),
            "at_8h": round(100 * (1 - math.exp(a + b * math.log2(budget_s))), 1), "points_fitted": len(pts)}


fit = power_law_fit(curve)
result = {"candidate": name, **cand, "minutes": minutes, "curve": curve, "fit": fit,
          "held_out_n": len(held), "torch_threads": 1}
out_path.write_text(json.dumps(result, indent=2) + "\n")
print("CURVE", json.dumps(result))
