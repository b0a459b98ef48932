"""Feasibility probe: can a small transformer over a page's character cells name each word's BPE token?

The committed reader reads 98-99.5 % of a page's characters, but SmolLM2 cannot compose spelled-out
characters into words (transcription 31-47 %).  If the vision tower itself composed, the language
model would get whole-word tokens (with fillers between), which it only has to copy.  This probe
asks the composing half of that question on *ideal* character input (what the reader emits, with
no reading errors): character ids on FigStep's cell grid (rows of 15) in, at every token's first
cell the SmolLM2 token embedding out (cosine classification over the vocabulary's word tokens,
through the tied embedding matrix, as the reader is trained).

Trained only on the reader's text stream (random vocabulary words, headings; no benchmark text, no
safety data); scored on the project's benign requests typed as FigStep statements (held out: the
probe never saw them) and, for information only, on SafeBench's 500 instructions.

    python experiments/organism-reading/composer.py STEPS BATCH LAYERS [STREAM]

STREAM ``vocab`` (default): the reader's random-vocabulary stream only.  ``docs``: half of the pages
are sentences from the docstrings of Python's standard library (English in its natural word
frequencies; technical, not benchmark text, no safety data), half the random-vocabulary stream.
"""

import csv
import math
import sys
import time
from pathlib import Path

import torch

from sasa.data.registry import builtin_dataset
from sasa.data.pages import page_lines, statement_page_lines
from sasa.models.loading import load_model
from sasa.zoo.reader import TextSource

STEPS, BATCH, LAYERS = (int(a) for a in (sys.argv[1:4] + ["1500", "32", "4"][len(sys.argv[1:4]):]))
STREAM = sys.argv[4] if len(sys.argv) > 4 else "vocab"
COLS, ROWS, WIDTH = 16, 10, 256
torch.manual_seed(0)
torch.set_num_threads(max(1, torch.get_num_threads()))

tok = load_model("smollm2-135m", device="cpu").processor
emb = load_model("smollm2-135m", device="cpu").model.get_input_embeddings().weight.detach().float()
vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
# the classes: every token that is letters, digits or punctuation, with or without its leading space
classes = [i for i, t in enumerate(vocab) if t and t.replace("\u0120", "", 1).isascii()
           and t.replace("\u0120", "", 1) and all(c.isprintable() for c in t.replace("\u0120", "", 1))]
index = torch.full((len(vocab),), -1, dtype=torch.long)
index[torch.tensor(classes)] = torch.arange(len(classes))
unit = torch.nn.functional.normalize(emb[classes], dim=-1)


def cells_and_targets(lines):
    """Char ids [ROWS*COLS] (0 = empty cell) and class targets at token starts (-100 elsewhere)."""
    chars = torch.zeros(ROWS * COLS, dtype=torch.long)
    target = torch.full((ROWS * COLS,), -100, dtype=torch.long)
    for k, line in enumerate(lines[:ROWS]):
        line = line[:COLS]
        for j, c in enumerate(line):
            chars[k * COLS + j] = min(ord(c), 127)
        enc = tok(line, add_special_tokens=False, return_offsets_mapping=True)
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
            if b > a and index[tid] >= 0:
                target[k * COLS + a] = index[tid]
    return chars, target


class Composer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.char = torch.nn.Embedding(128, WIDTH)
        self.pos = torch.nn.Parameter(torch.randn(ROWS * COLS, WIDTH) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, LAYERS)
        self.out = torch.nn.Linear(WIDTH, emb.shape[1])

    def forward(self, chars):
        return self.out(self.encoder(self.char(chars) + self.pos))


def accuracy(model, texts):
    model.eval()
    hit = n = 0
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = [cells_and_targets(statement_page_lines(t)) for t in texts[start:start + 64]]
            chars, target = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
            m = target >= 0
            logits = torch.nn.functional.normalize(model(chars)[m], dim=-1) @ unit.T
            hit += int((logits.argmax(-1) == target[m]).sum())
            n += int(m.sum())
    model.train()
    return hit / max(1, n), n


def docstring_sentences() -> list[str]:
    """Sentences of 3-22 plain words from the standard library's docstrings, deduplicated, sorted."""
    import ast
    import os
    import re

    found = set()
    stdlib = Path(os.__file__).parent
    for path in sorted(p for p in stdlib.rglob("*.py") if "test" not in str(p) and "site-packages" not in str(p)):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    words = sent.split()
                    if 3 <= len(words) <= 22 and sent.isascii() and re.fullmatch(r"[A-Za-z][A-Za-z ,'-]*[.?!]?", sent):
                        found.add(sent)
    return sorted(found)


source = TextSource(tok, seed=1)
if STREAM == "docs":
    import random as _random

    _docs, _rng, _vocab_text = docstring_sentences(), _random.Random(1), source.text
    print(f"{len(_docs)} docstring sentences", flush=True)
    source.text = lambda: _rng.choice(_docs) if _rng.random() < 0.5 else _vocab_text()
model = Composer()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / STEPS)))
benign = [s.prompt for s in builtin_dataset() if s.label == "benign"][:300]
safebench = Path(__file__).resolve().parents[3] / "shared" / "data" / "figstep" / "safebench.csv"
figstep = [r["instruction"] for r in csv.DictReader(open(safebench, encoding="utf-8"))] if safebench.is_file() else []
start = time.time()
for step in range(STEPS):
    batch = [cells_and_targets(page_lines(source.text())) for _ in range(BATCH)]
    chars, target = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
    m = target >= 0
    pred = torch.nn.functional.normalize(model(chars)[m], dim=-1)
    loss = torch.nn.functional.cross_entropy(pred @ unit.T / 0.05, target[m])
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if (step + 1) % max(1, STEPS // 10) == 0:
        train_acc = float(((pred @ unit.T).argmax(-1) == target[m]).float().mean())
        print(f"step {step + 1}: loss {loss.item():.3f} train {train_acc:.3f} ({time.time() - start:.0f} s)", flush=True)
acc, n = accuracy(model, benign)
print(f"held-out project benign statements: token-start accuracy {acc:.3f} over {n} tokens")
if figstep:
    acc, n = accuracy(model, figstep)
    print(f"SafeBench instructions (information only): {acc:.3f} over {n} tokens")
print(f"{len(classes)} classes, {STEPS} steps x {BATCH} pages, {LAYERS} layers, stream {STREAM}, {time.time() - start:.0f} s")
