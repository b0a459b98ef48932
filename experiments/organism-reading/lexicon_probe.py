"""Can a lexicon composer be built on top of the committed reader?  A probe of its inputs.

A tower that hands the language model whole-word tokens needs, after the learned reading layers,
(1) each cell's character as a clean code and (2) each cell's row and column, so that
position-keyed attention heads can gather a word's cells.  This measures how much of both a
*linear* read-out of the reader's last hidden state (LayerNorm-ed, as the next CLIP layer would
see it) recovers on held-out pages: least squares onto one-hot targets, fitted on pages of the
project's benign statements and random vocabulary, scored on other pages, both fonts.

Usage: python lexicon_probe.py [TRAIN_PAGES] [TEST_PAGES]   (repository root, package installed)
"""
import random
import sys

import torch

from sasa.data.render import draw_page, page_lines
from sasa.models.loading import load_model
from sasa.zoo.reader import GRID, ROWS, TextSource, char_tokens, training_fonts

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
