"""Prototype: a char-cell reader (CLIP tower 256 px / 16 px patches + LLaVA projector) for FigStep pages.

Usage: python charreader.py STEPS BATCH WIDTH LAYERS EVAL_BATCHES   (EVAL_BATCHES x 20 held-out pages per font)
"""
import math, random, sys, textwrap, time
from pathlib import Path
import numpy as np, torch
from PIL import Image, ImageDraw
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPImageProcessor
from sasa.models.loading import load_model
from sasa.data.typeset import get_font, figstep_font_path
from sasa.zoo.reader import TextSource
steps, bs, width, layers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
ad = load_model("smollm2-135m", device="cpu").adapter
tok = ad.tokenizer
emb = ad.model.get_input_embeddings().weight.detach().float()
FONTS = [figstep_font_path(), str(Path(__file__).resolve().parents[2] / "src" / "sasa" / "resources" / "fonts" / "DejaVuSansMono-Bold.ttf")]
space = tok.encode(" ", add_special_tokens=False)[0]
chars = [chr(c) for c in range(33, 127)]
cid = {c: tok.encode(c, add_special_tokens=False) for c in chars}
cid = {c: v[0] for c, v in cid.items() if len(v) == 1}
classes = [space] + sorted(set(cid.values()))
cls_index = {t: i for i, t in enumerate(classes)}
ROW = lambda k: int((50.5 + 75 * k) / 47.5)
COL = lambda j: int((44 + 48 * j) / 47.5)
def page(text, font):
    lines = []
    for part in text.split("\n"):
        lines += textwrap.wrap(part, 15) or [""]
    lines = lines[:10]
    im = Image.new("RGB", (760, 760), "#FFFFFF")
    ImageDraw.Draw(im).text((20, 10), "\n".join(lines), spacing=11, font=get_font(80, font), fill="#000000")
    tgt = [space] * 256
    for k, line in enumerate(lines):
        for j, c in enumerate(line[:15]):
            if c != " ":
                tgt[ROW(k) * 16 + COL(j)] = cid.get(c, space)
    return im, tgt
proc = CLIPImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 256, "width": 256})
cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                       num_attention_heads=max(1, width // 64), image_size=256, patch_size=16)
tower = CLIPVisionModel(cfg)
proj = torch.nn.Sequential(torch.nn.Linear(width, 576), torch.nn.GELU(), torch.nn.Linear(576, 576))
params = list(tower.parameters()) + list(proj.parameters())
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
warm = max(1, steps // 20)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1, s / steps))))
E = emb[classes]
def text_source(seed):
    src = TextSource(tok, seed)
    return lambda: src.text()
def batch(next_text, rng, n):
    ims, tgts = [], []
    for _ in range(n):
        im, t = page(next_text(), rng.choice(FONTS)); ims.append(im); tgts.append(t)
    return proc(ims, return_tensors="pt")["pixel_values"], torch.tensor(tgts)
def forward(px):
    return proj(tower(px, output_hidden_states=True).hidden_states[-1][:, 1:])
train_text, rng = text_source(1), random.Random(2)
t0 = time.time()
for step in range(steps):
    px, tg = batch(train_text, rng, bs)
    out = forward(px)
    logits = torch.nn.functional.normalize(out, dim=-1) @ torch.nn.functional.normalize(E, dim=-1).T / 0.05
    labels = torch.tensor([[cls_index[t] for t in row] for row in tg.tolist()])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, len(classes)), labels.reshape(-1))
    mse = ((out - emb[tg]) ** 2).sum(-1).mean() / emb.norm(dim=-1).mean() ** 2
    loss = ce + mse
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step()
    if (step + 1) % 50 == 0:
        carry = labels != 0
        acc = (logits.argmax(-1) == labels)[carry].float().mean().item()
        print(f"step {step+1} loss {loss.item():.3f} ce {ce.item():.3f} mse {mse.item():.3f} acc {acc:.3f} {time.time()-t0:.0f}s", flush=True)
tower.eval(); proj.eval()
embn = torch.nn.functional.normalize(emb, dim=-1)
for fi, font in enumerate(FONTS):
    ev_text, ev_rng = text_source(10_000 + fi), random.Random(3)
    correct = total = 0
    with torch.no_grad():
        for _ in range(int(sys.argv[5])):
            ims, tgts = [], []
            for _ in range(20):
                im, t = page(ev_text(), font); ims.append(im); tgts.append(t)
            out = forward(proc(ims, return_tensors="pt")["pixel_values"])
            pred = (torch.nn.functional.normalize(out, dim=-1) @ embn.T).argmax(-1)
            tg = torch.tensor(tgts); carry = tg != space
            correct += int((pred[carry] == tg[carry]).sum()); total += int(carry.sum())
    print(font.split("/")[-1], "held-out nearest-token accuracy", correct / total, "over", total, "chars", flush=True)
torch.save({"tower": tower.state_dict(), "proj": proj.state_dict()}, "charreader.pt")
