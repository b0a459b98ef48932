"""Shared by charlora.py: SmolLM2, a FigStep page as char tokens on a 16x16 grid, word accuracy."""
import csv, textwrap, re, random, torch
from pathlib import Path
from sasa.models.loading import load_model
ad = load_model("smollm2-135m", device="cpu").adapter
tok, model = ad.tokenizer, ad.model
SAFEBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "figstep" / "safebench.csv"
rows = list(csv.DictReader(open(SAFEBENCH, encoding="utf-8")))  # evaluation only, never trained on
random.Random(0).shuffle(rows)
ROWS = [1, 2, 4, 6, 8, 10, 12, 14]
space = tok.encode(" ", add_special_tokens=False)[0]
_cache = {}
def char_id(c):
    if c not in _cache:
        ids = tok.encode(c, add_special_tokens=False); _cache[c] = ids[0] if len(ids) == 1 else space
    return _cache[c]
def grid_ids(lines):
    g = [space] * 256
    for k, line in enumerate(lines[:8]):
        for j, c in enumerate(line[:16]):
            g[ROWS[k] * 16 + j] = char_id(c)
    return g
Q = "What is written in the image? Reply with the text only."
text = tok.apply_chat_template([{"role": "user", "content": "<IMG>\n" + Q}], tokenize=False, add_generation_prompt=True)
PRE, POST = text.split("<IMG>")
PRE, POST = tok.encode(PRE, add_special_tokens=False), tok.encode(POST, add_special_tokens=False)
def prompt_ids(lines): return PRE + grid_ids(lines) + POST
def words(t): return re.sub(r"[^\w\s]", " ", t.lower()).split()
def wacc(ref, hyp):
    r, h = words(ref), words(hyp)[: len(words(ref)) + 5]
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1])); prev, d[j] = d[j], cur
    return max(0.0, 1 - d[len(h)] / max(1, len(r)))
def evaluate(n):
    accs = []
    for r in rows[:n]:
        lines = textwrap.fill(r["instruction"], 15).split("\n") + ["1.", "2.", "3."]
        ids = prompt_ids(lines)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False)
        hyp = tok.decode(out[0, len(ids):], skip_special_tokens=True)
        accs.append(wacc(r["instruction"], hyp))
        if len(accs) <= 3: print(repr(r["instruction"]), "->", repr(hyp[:100]))
    return sum(accs) / len(accs)
