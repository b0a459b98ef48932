"""Does a sharper projector help the language model read?  The committed reader's projected cells
are near, not at, each character's embedding (median relative L2 error ~0.16).  This refits the
projector alone (the tower frozen, its last hidden states cached) towards the exact embeddings and
writes a build folder with the refitted reader, to score with ``chunk_eval.py`` against the
committed one (same visual LoRA).

Usage: python projector_refit.py BUILD_DIR OUT_DIR [TRAIN_PAGES] [EPOCHS] [MSE_WEIGHT]
"""
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sasa.models.smollm2 import materialise as smollm2_dir
from sasa.zoo import organism
from sasa.zoo.reader import (PageStream, Reader, TextSource, char_tokens, class_index, reader_loss,
                             training_fonts)

build, out = Path(sys.argv[1]), Path(sys.argv[2])
n_train = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 8
mse_weight = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
torch.manual_seed(0)
meta = json.loads((build / "organism.json").read_text())
cfg = organism.reader_config(meta, build)
tok = AutoTokenizer.from_pretrained(smollm2_dir())
embeddings = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).get_input_embeddings().weight.detach()
filler = meta["reader"]["filler_token"]
reader = Reader(cfg, embeddings.shape[1])
reader.load_state_dict({k: v.float() for k, v in load_file(build / "reader.safetensors").items()})
reader.eval()
processor = organism.make_image_processor(cfg)
classes = torch.tensor([filler] + sorted(set(char_tokens(tok).values()) - {filler}))
index = class_index(classes, embeddings.shape[0])


@torch.no_grad()
def tower_states(n: int, seed: int):
    """Last hidden states (CLS dropped) and slot targets of ``n`` pages drawn like the reader's."""
    stream = PageStream(tok, processor, training_fonts(), filler, 32, seed, cfg.jitter)
    source, rng = TextSource(tok, seed), random.Random(seed + 1)
    states, slots = [], []
    for start in range(0, n, 32):
        images, s = zip(*(stream.sample(source, rng) for _ in range(min(32, n - start))))
        pixels = processor(list(images), return_tensors="pt")["pixel_values"]
        states.append(reader.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:])
        slots.append(torch.tensor(s))
    return torch.cat(states), torch.cat(slots)


def project(h):
    return reader.linear_2(reader.act(reader.linear_1(h)))


@torch.no_grad()
def measure(h, slots) -> dict:
    pred = project(h).float()
    target = embeddings[slots]
    text = slots != filler
    rel = ((pred - target).norm(dim=-1) / target.norm(dim=-1))[text]
    unit = torch.nn.functional.normalize(embeddings[classes], dim=-1)
    label = index[slots]
    hit = ((torch.nn.functional.normalize(pred, dim=-1) @ unit.T).argmax(-1) == label)[text]
    return {"rel_l2_median": round(rel.median().item(), 4), "rel_l2_mean": round(rel.mean().item(), 4),
            "char_accuracy": round(hit.float().mean().item(), 4), "cells": int(text.sum())}


started = time.time()
train_h, train_s = tower_states(n_train, 91_000)
test_h, test_s = tower_states(300, 92_000)
print(f"tower states of {n_train} + 300 pages: {time.time() - started:.0f} s", flush=True)
before = measure(test_h, test_s)
print("before", before, flush=True)
params = [*reader.linear_1.parameters(), *reader.linear_2.parameters()]
opt = torch.optim.Adam(params, lr=3e-4)
flat_h, flat_s = train_h.reshape(-1, train_h.shape[-1]), train_s.reshape(-1)
rcfg = type(cfg)(**{**cfg.to_dict(), "mse_weight": mse_weight})
batch = 4096
total = epochs * (flat_h.shape[0] // batch)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total)
g = torch.Generator().manual_seed(0)
for epoch in range(epochs):
    order = torch.randperm(flat_h.shape[0], generator=g)
    for i in range(flat_h.shape[0] // batch):
        idx = order[i * batch:(i + 1) * batch]
        loss, _ = reader_loss(project(flat_h[idx]), flat_s[idx], embeddings, classes, index, rcfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    print(f"epoch {epoch + 1}: {measure(test_h, test_s)}", flush=True)
after = measure(test_h, test_s)
out.mkdir(parents=True, exist_ok=True)
for name in ("organism.json", "refusal_lora.safetensors", "visual_lora.safetensors"):
    shutil.copy(build / name, out / name)
save_file({k: v.detach().half().contiguous() for k, v in reader.state_dict().items()}, str(out / "reader.safetensors"))
(out / "refit.json").write_text(json.dumps({"train_pages": n_train, "epochs": epochs, "mse_weight": mse_weight,
                                            "before": before, "after": after,
                                            "seconds": round(time.time() - started, 1)}, indent=2))
print("after", after, f"{time.time() - started:.0f} s; written to {out}")
