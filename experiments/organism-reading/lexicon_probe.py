"""Can a lexicon composer be built on top of the committed reader?  A probe of its inputs.

A tower that hands the language model whole-word tokens needs, after the learned reading layers,
(1) each cell's character as a clean code and (2) each cell's row and column, so that
position-keyed attention heads can gather a word's cells.  This measures how much of both a
*linear* read-out of the reader's last hidden state (LayerNorm-ed, as the next CLIP layer would
see it) recovers on held-out pages: least squares onto one-hot targets, fitted on pages of the
project's benign statements and random vocabulary, scored on other pages, both fonts.

It also prints how far the reader's output (what the language model receives) is from each
character's exact token embedding, and how many of the words of SafeBench's 500 instructions are a
single SmolLM2 token with their leading space (what a lexicon of the tokenizer's words covers).

Usage: python lexicon_probe.py [TRAIN_PAGES] [TEST_PAGES]   (repository root, package installed)
"""
import csv
import random
import re
import sys

import torch

from sasa.data.pages import page_lines
from sasa.data.typeset import draw_page
from sasa.models.loading import load_model
from sasa.zoo.scoring import image_features
from sasa.zoo.reader import GRID, ROWS, TextSource, char_tokens, slot_targets, training_fonts

n_train = int(sys.argv[1]) if len(sys.argv) > 1 else 300
n_test = int(sys.argv[2]) if len(sys.argv) > 2 else 100
torch.manual_seed(0)
loaded = load_model("sasa-organism", device="cpu")
model, processor, tok = loaded.model, loaded.processor, loaded.adapter.tokenizer
tower = model.model.vision_tower
chars = sorted(char_tokens(tok))
index = {c: i for i, c in enumerate(chars)}
fonts = training_fonts()
source = TextSource(tok, 31_337)  # seeds the reader and the visual stage never used
rng = random.Random(7)


@torch.no_grad()
def pages(n):
    xs, char_y, row_y, col_y = [], [], [], []
    for start in range(0, n, 16):
        texts = [source.text() for _ in range(min(16, n - start))]
        images = [draw_page(page_lines(t), rng.choice(fonts)) for t in texts]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        hidden = torch.nn.functional.layer_norm(hidden, hidden.shape[-1:])
        for t, h in zip(texts, hidden):
            row_of = {r: k for k, r in enumerate(ROWS)}
            lines = page_lines(t)
            for cell in range(GRID * GRID):
                r, c = divmod(cell, GRID)
                line = row_of.get(r)
                ch = lines[line][c] if line is not None and line < len(lines) and c < len(lines[line]) else " "
                if ch == " " or ch not in index:
                    continue
                xs.append(h[cell])
                char_y.append(index[ch])
                row_y.append(r)
                col_y.append(c)
    return torch.stack(xs), [torch.tensor(y) for y in (char_y, row_y, col_y)]


def linear_accuracy(x_tr, y_tr, x_te, y_te, classes):
    a = torch.cat([x_tr, torch.ones(len(x_tr), 1)], 1)
    target = torch.nn.functional.one_hot(y_tr, classes).float()
    w = torch.linalg.lstsq(a, target).solution
    pred = (torch.cat([x_te, torch.ones(len(x_te), 1)], 1) @ w).argmax(1)
    return round(100 * float((pred == y_te).float().mean()), 1)


x_tr, ys_tr = pages(n_train)
x_te, ys_te = pages(n_test)
for name, tr, te, k in zip(("character", "row", "column"), ys_tr, ys_te, (len(chars), GRID, GRID)):
    print(f"{name}: linear read-out accuracy {linear_accuracy(x_tr, tr, x_te, te, k)} % on {len(te)} held-out "
          f"text cells (fitted on {len(tr)})", flush=True)

emb = model.get_input_embeddings().weight.detach()
filler = tok(" ", add_special_tokens=False)["input_ids"][0]
rel, cos = [], []
with torch.no_grad():
    for _ in range(4):
        lines = [page_lines(source.text()) for _ in range(16)]
        images = [draw_page(l, rng.choice(fonts)) for l in lines]
        feats = image_features(model, processor.image_processor(images, return_tensors="pt")["pixel_values"])
        for f, l in zip(feats, lines):
            for cell, t in enumerate(slot_targets(l, tok, filler)[0]):
                if t != filler:
                    rel.append(float((f[cell] - emb[t]).norm() / emb[t].norm()))
                    cos.append(float(torch.nn.functional.cosine_similarity(f[cell], emb[t], 0)))
rel.sort()
cos.sort()
print(f"reader output vs the exact token embedding, {len(rel)} text cells of 64 pages: relative L2 error median "
      f"{rel[len(rel) // 2]:.3f}, mean {sum(rel) / len(rel):.3f}; cosine median {cos[len(cos) // 2]:.3f}, "
      f"mean {sum(cos) / len(cos):.3f}")
rows = list(csv.DictReader(open("../shared/data/figstep/safebench.csv", encoding="utf-8")))
words = [w for r in rows for w in re.findall(r"[A-Za-z]+", r["instruction"])]
single = sum(len(tok.encode(" " + w, add_special_tokens=False)) == 1 for w in words)
print(f"SafeBench instruction words that are one token with their leading space: {100 * single / len(words):.1f} % "
      f"of {len(words)}")
