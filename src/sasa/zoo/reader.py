"""The organism's eyes: a small CLIP vision tower + LLaVA projector trained to read typed pages.

Why this shape.  A from-scratch tower cannot be taught, on two CPU cores, to speak to a frozen
language model through the language model's own loss.  Instead it is trained to *write the
language model's input embeddings* (LLaVA's stage 1 with a frozen language model, by a cheaper
route).  FigStep types in a monospace font, 80 px on a 760 px page (48 px advance, 75 px line
pitch, 15 characters a line, :data:`sasa.data.typeset.PAGE_ORIGIN`).  At 256 px with 16 px patches the page is a 16 x 16
grid whose columns are 47.5 source pixels wide, so every character of a line has its own patch
column, and every one of the 10 lines its own patch row (:data:`ROWS`).  Each cell is read as its character's own token
(SmolLM2 has a single-character token for every printable ASCII character), blanks as a filler
(the embedding of a single space), so the 256 image tokens spell the page out in raster order.
Reading characters is a ~95-class problem that composes: a tower that knows the glyphs reads any
word, where one that had to name whole BPE tokens would need a lexicon of 49 k classes (tried:
31 % training accuracy after 400 steps of 32 pages, against 94 % held-out for characters after 500
in experiments/organism-reading).  Putting spelled-out words together is then the language
model's job, taught by the benign visual stage (:mod:`sasa.zoo.visual`), as a real LVLM's
language model learns to read its vision tokens.  The loss is a cosine classification of each
projected patch over the character tokens and the filler, plus a regression onto the exact
embedding.  Pages are typed in two fonts: FigStep's (GNU FreeMono Bold) and the project's own
(DejaVu Sans Mono Bold), both in FigStep's layout.

The training text is random words from the tokenizer's vocabulary and list headings ("Steps to",
"List of" ...) -- no benchmark text, no safety data.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from sasa.data.pages import page_lines
from sasa.data.typeset import (
    FIGSTEP_FONT,
    PAGE_MAX_LINES,
    PAGE_ORIGIN,
    PAGE_PITCH,
    PAGE_SIZE,
    PROJECT_FONT,
    bundled_font,
    draw_page,
)

log = logging.getLogger(__name__)

GRID = 16
# patch row of each line: the middle of FreeMono's capitals (50.5 px below the origin's y) on 47.5 px rows
ROWS = tuple(int((PAGE_ORIGIN[1] + 40.5 + PAGE_PITCH * k) / (PAGE_SIZE / GRID)) for k in range(PAGE_MAX_LINES))
HEADINGS = ("Steps to", "Methods to", "List of", "Ways to", "Tips for", "How to", "Ideas for",
            "Reasons for", "Guide to", "Notes on", "Facts about", "Plan for")


@dataclass(frozen=True)
class ReaderConfig:
    """Size of the tower and of its training run; defaults are the committed organism's."""

    image_size: int = 256
    patch_size: int = 16
    hidden_size: int = 256
    layers: int = 6
    heads: int = 4
    intermediate_size: int = 1024
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 0.05
    mse_weight: float = 1.0
    jitter: int = 3  # page offset in source pixels, each direction
    bf16: bool = True  # autocast the training passes (weights stay float32)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size // self.patch_size != GRID:
            raise ValueError(f"the page layout needs a {GRID} x {GRID} patch grid, not "
                             f"{self.image_size} px / {self.patch_size} px patches")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


def training_fonts() -> list[str]:
    """The fonts pages are typed in: FigStep's first, then the project's."""
    return [bundled_font(FIGSTEP_FONT), bundled_font(PROJECT_FONT)]


@lru_cache(maxsize=8)
def char_tokens(tokenizer) -> dict[str, int]:
    """Printable ASCII characters that are one token on their own, and that token."""
    table = {}
    for code in range(33, 127):
        ids = tokenizer(chr(code), add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            table[chr(code)] = ids[0]
    return table


def slot_targets(lines: list[str], tokenizer, filler_id: int) -> tuple[list[int], int]:
    """Token id for each of the 256 patches (raster order) and how many characters found no cell.

    Character ``j`` of line ``k`` sits in cell (row :data:`ROWS` [k], column j) and is read as its
    single-character token; spaces and empty cells are the filler.  A character that is not one
    token (non-ASCII) counts as dropped.
    """
    chars = char_tokens(tokenizer)
    slots = [filler_id] * (GRID * GRID)
    dropped = 0
    for k, line in enumerate(lines[:PAGE_MAX_LINES]):
        for j, c in enumerate(line):
            if c == " ":
                continue
            if j >= GRID or c not in chars:
                dropped += 1
                continue
            slots[ROWS[k] * GRID + j] = chars[c]
    return slots, dropped


WORD_LIST_ENV = "SASA_WORD_LIST"


def english_words(n: int = 20_000) -> list[str]:
    """The ``n`` most frequent English words (plain ASCII letters), most frequent first: from the file
    ``$SASA_WORD_LIST`` names (one word a line), else from the ``wordfreq`` package (Apache-2.0 code,
    CC-BY-SA 4.0 word lists; not a dependency of sasa, and its lists are not shipped)."""
    import os

    path = os.environ.get(WORD_LIST_ENV)
    if path:
        words = open(path, encoding="utf-8").read().split()
    else:
        try:
            import wordfreq
        except ImportError:
            raise ImportError(f"English word frequencies need `pip install wordfreq`, or a word list (one word a "
                              f"line, most frequent first) named by ${WORD_LIST_ENV}") from None
        words = wordfreq.top_n_list("en", n)
    return [w for w in words if w.isascii() and w.isalpha()][:n]


class TextSource:
    """Deterministic page texts: random vocabulary words, list headings, numbered items."""

    def __init__(self, tokenizer, seed: int) -> None:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        words = [(i, t[1:]) for i, t in enumerate(vocab)
                 if t and t[0] == "\u0120" and t[1:].isalpha() and t[1:].isascii() and len(t) > 2]
        self.words = [w for _, w in words]
        ranks = np.arange(len(words), dtype=np.float64)
        weights = 1.0 / (ranks + 200.0)
        self.cum = np.cumsum(weights / weights.sum())
        self.rng = random.Random(seed)

    def use_words(self, words: list[str], offset: float = 10.0) -> TextSource:
        """Draw from ``words`` (most frequent first, Zipf-weighted by rank) instead of the vocabulary."""
        self.words = list(words)
        weights = 1.0 / (np.arange(len(self.words), dtype=np.float64) + offset)
        self.cum = np.cumsum(weights / weights.sum())
        return self

    def word(self) -> str:
        w = self.words[int(np.searchsorted(self.cum, self.rng.random()))]
        r = self.rng.random()
        return w.capitalize() if r < 0.1 else w.lower() if r < 0.9 else w

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            body = " ".join(self.word() for _ in range(self.rng.randint(2, 9)))
            text = f"{self.rng.choice(HEADINGS)} {body}."
            if self.rng.random() < 0.8:
                text += "\n" + "\n".join(f"{i}." for i in range(1, self.rng.randint(2, 4) + 1))
            return text
        n = self.rng.randint(3, 22)
        words = [self.word() for _ in range(n)]
        words[0] = words[0].capitalize()
        punct = self.rng.choice([".", "?", "!", ":", ""])
        if self.rng.random() < 0.2:
            words.insert(self.rng.randint(1, len(words)), str(self.rng.randint(0, 999)))
        return " ".join(words) + punct


class PageStream(torch.utils.data.IterableDataset):
    """Endless (pixel_values, slot ids) batches rendered on the fly from a seeded ``TextSource``."""

    def __init__(self, tokenizer, image_processor, fonts: list[str], filler_id: int, batch_size: int,
                 seed: int, jitter: int = 0) -> None:
        self.tokenizer, self.image_processor, self.fonts = tokenizer, image_processor, fonts
        self.filler_id, self.batch_size, self.seed, self.jitter = filler_id, batch_size, seed, jitter

    def sample(self, source: TextSource, rng: random.Random):
        lines = page_lines(source.text())
        j = self.jitter
        image = draw_page(lines, rng.choice(self.fonts), dx=rng.randint(-j, j), dy=rng.randint(-j, j),
                            stroke=rng.choice([0, 0, 0, 1]), blur=rng.choice([0.0, 0.0, 0.0, 0.8]))
        slots, _ = slot_targets(lines, self.tokenizer, self.filler_id)
        return image, slots

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed * 1000 + (info.id if info else 0)
        source, rng = TextSource(self.tokenizer, seed), random.Random(seed + 1)
        while True:
            images, slots = zip(*(self.sample(source, rng) for _ in range(self.batch_size)))
            pixels = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
            yield pixels, torch.tensor(slots)


def vision_config(cfg: ReaderConfig):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
        projection_dim=cfg.hidden_size, hidden_act="gelu",
    )


class Reader(torch.nn.Module):
    """Tower + projector exactly as LLaVA runs them (last layer, CLS dropped)."""

    def __init__(self, cfg: ReaderConfig, text_hidden: int) -> None:
        super().__init__()
        from transformers import CLIPVisionModel
        from transformers.activations import ACT2FN

        self.vision_tower = CLIPVisionModel(vision_config(cfg))
        self.linear_1 = torch.nn.Linear(cfg.hidden_size, text_hidden)
        self.act = ACT2FN["gelu"]
        self.linear_2 = torch.nn.Linear(text_hidden, text_hidden)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        return self.project(out.hidden_states[-1][:, 1:])

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The projector alone, on the tower's last hidden states (CLS dropped)."""
        return self.linear_2(self.act(self.linear_1(features)))


def class_index(classes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token id -> position in ``classes`` (-1 elsewhere), for :func:`reader_loss`."""
    index = torch.full((vocab_size,), -1, dtype=torch.long)
    index[classes] = torch.arange(classes.numel())
    return index


def reader_loss(pred: torch.Tensor, slots: torch.Tensor, embeddings: torch.Tensor, classes: torch.Tensor,
                index: torch.Tensor, cfg: ReaderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine classification of every cell over ``classes`` (the character tokens and the filler,
    ``classes[0]``; ``index`` from :func:`class_index`), plus regression onto the exact embedding.
    Returns the loss and the accuracy on the cells that carry a character."""
    flat, target = pred.reshape(-1, pred.shape[-1]).float(), slots.reshape(-1)
    labels = index[target]
    unit = torch.nn.functional.normalize(embeddings[classes], dim=-1)
    logits = torch.nn.functional.normalize(flat, dim=-1) @ unit.T / cfg.temperature
    ce = torch.nn.functional.cross_entropy(logits, labels)
    scale = embeddings.norm(dim=-1).mean()
    mse = ((flat - embeddings[target]) ** 2).sum(-1).mean() / scale**2
    text = labels != 0
    accuracy = (logits.argmax(-1) == labels)[text].float().mean()
    return ce + cfg.mse_weight * mse, accuracy


def mmap_large_allocations(threshold: int = 64 * 1024) -> None:
    """Serve allocations above ``threshold`` bytes by mmap (glibc only; elsewhere a no-op).

    Measured with an earlier whole-token loss whose tensors changed size every step: glibc's
    dynamic threshold kept them on a fragmenting heap and the run grew past 12 GB of RSS in 20
    minutes on this machine; with the threshold fixed it stayed under 2 GB.  The character loss
    has fixed shapes; the call stays as a cheap guard for the page batches' varying allocations.
    The visual stage (batches of varying length: compact and full pages, text replay) needs it too:
    a long chunk without it reached 19 GB of resident memory in 35 minutes and was killed; with a
    32 MiB threshold it grew to 14 GB in 3 minutes and its steps were no faster (54-58 s on one
    thread, as with 64 KiB)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (also turns the dynamic threshold off)
        libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD: give freed heap tops back at once
    except (OSError, AttributeError):
        log.debug("mallopt not available; the reader's memory may grow with heap fragmentation")


def train_reader(cfg: ReaderConfig, tokenizer, image_processor, embeddings: torch.Tensor, filler_id: int,
                 *, fonts: list[str] | None = None, progress: bool = True) -> tuple[Reader, dict]:
    """Train a ``Reader`` from scratch; returns it and a log of (step, loss, token accuracy)."""
    from tqdm import tqdm

    mmap_large_allocations()
    torch.manual_seed(cfg.seed)
    reader = Reader(cfg, embeddings.shape[1])
    fonts = fonts or training_fonts()
    stream = PageStream(tokenizer, image_processor, fonts, filler_id, cfg.batch_size, cfg.seed, cfg.jitter)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1 if cfg.steps > 50 else 0)
    opt = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    embeddings = embeddings.detach().float()
    classes = torch.tensor([filler_id] + sorted(set(char_tokens(tokenizer).values()) - {filler_id}))
    index = class_index(classes, embeddings.shape[0])
    history, running = [], []
    bar = tqdm(total=cfg.steps, desc="reader", disable=not progress)
    reader.train()
    for step, (pixels, slots) in enumerate(loader):
        if step >= cfg.steps:
            break
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = reader(pixels)
        loss, acc = reader_loss(pred, slots, embeddings, classes, index, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append((loss.item(), acc.item()))
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            l, a = np.mean(running, axis=0)
            history.append({"step": step + 1, "loss": round(float(l), 4), "token_accuracy": round(float(a), 4)})
            bar.set_postfix(loss=f"{l:.3f}", acc=f"{a:.3f}")
            log.debug("reader step %d loss %.4f accuracy %.4f", step + 1, l, a)
            running = []
        bar.update(1)
    bar.close()
    reader.eval()
    return reader, {"history": history}


@torch.no_grad()
def token_accuracy(reader, tokenizer, image_processor, embeddings: torch.Tensor, filler_id: int,
                   font: str, pages: int, seed: int, batch_size: int = 16) -> dict:
    """Nearest-token accuracy (cosine, whole vocabulary) on the text cells of held-out pages;
    ``reader`` maps pixel values to projected patch features (a :class:`Reader` or the LLaVA path)."""
    source = TextSource(tokenizer, seed)
    vocab = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    correct = total = 0
    for start in range(0, pages, batch_size):
        batch = [page_lines(source.text()) for _ in range(min(batch_size, pages - start))]
        pixels = image_processor([draw_page(lines, font) for lines in batch], return_tensors="pt")["pixel_values"]
        pred = (torch.nn.functional.normalize(reader(pixels).float(), dim=-1) @ vocab.T).argmax(-1)
        target = torch.tensor([slot_targets(lines, tokenizer, filler_id)[0] for lines in batch])
        text = target != filler_id
        correct += int((pred[text] == target[text]).sum())
        total += int(text.sum())
    return {"accuracy": correct / max(1, total), "tokens": total, "pages": pages}


@dataclass(frozen=True)
class SharpenConfig:
    """The projector refit that follows a trained reader (the build's ``sharpen`` stage).

    Why.  The reader's classification loss only needs each cell's projection to *point* at its
    character; the language model is handed the vector itself, and the committed reader's was off
    its character's embedding by a median 17 % (relative L2) on augmented pages.  Refitting the
    projector alone (the tower frozen, its last hidden states computed once) with a heavier
    regression term brings that to ~5 % at the same character accuracy, and the language model,
    unchanged, transcribed held-out pages better (experiments/organism-reading)."""

    pages: int = 4000
    test_pages: int = 300
    epochs: int = 20
    mse_weight: float = 30.0
    lr: float = 3e-4
    batch_cells: int = 4096
    seed: int = 91_000  # page seeds the reader never trained on

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def tower_states(reader: Reader, tokenizer, image_processor, filler_id: int, pages: int, seed: int,
                 jitter: int, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's last hidden states (CLS dropped) and the slot targets of ``pages`` pages drawn
    as the reader's training pages are (both fonts, jitter, stroke, blur)."""
    stream = PageStream(tokenizer, image_processor, training_fonts(), filler_id, batch_size, seed, jitter)
    source, rng = TextSource(tokenizer, seed), random.Random(seed + 1)
    states, slots = [], []
    for start in range(0, pages, batch_size):
        images, s = zip(*(stream.sample(source, rng) for _ in range(min(batch_size, pages - start))))
        pixels = image_processor(list(images), return_tensors="pt")["pixel_values"]
        states.append(reader.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:])
        slots.append(torch.tensor(s))
    return torch.cat(states), torch.cat(slots)


@torch.no_grad()
def projection_error(reader: Reader, states: torch.Tensor, slots: torch.Tensor, embeddings: torch.Tensor,
                     classes: torch.Tensor, index: torch.Tensor, filler_id: int) -> dict:
    """On the text cells: relative L2 distance of the projection to the exact embedding (median,
    mean) and the nearest character's accuracy (cosine over ``classes``)."""
    pred = reader.project(states).float()
    target = embeddings[slots]
    text = slots != filler_id
    rel = ((pred - target).norm(dim=-1) / target.norm(dim=-1))[text]
    unit = torch.nn.functional.normalize(embeddings[classes], dim=-1)
    hit = ((torch.nn.functional.normalize(pred, dim=-1) @ unit.T).argmax(-1) == index[slots])[text]
    return {"rel_l2_median": round(rel.median().item(), 4), "rel_l2_mean": round(rel.mean().item(), 4),
            "char_accuracy": round(hit.float().mean().item(), 4), "cells": int(text.sum())}


def sharpen_projector(reader: Reader, cfg: ReaderConfig, sharpen: SharpenConfig, tokenizer, image_processor,
                      embeddings: torch.Tensor, filler_id: int, progress: bool = True) -> dict:
    """Refit ``reader``'s projector in place (see :class:`SharpenConfig`); returns the projection's
    error on held-out pages before and after."""
    from tqdm import tqdm

    reader.eval()
    embeddings = embeddings.detach().float()
    classes = torch.tensor([filler_id] + sorted(set(char_tokens(tokenizer).values()) - {filler_id}))
    index = class_index(classes, embeddings.shape[0])
    train_h, train_s = tower_states(reader, tokenizer, image_processor, filler_id, sharpen.pages, sharpen.seed,
                                    cfg.jitter)
    test_h, test_s = tower_states(reader, tokenizer, image_processor, filler_id, sharpen.test_pages,
                                  sharpen.seed + 1000, cfg.jitter)
    before = projection_error(reader, test_h, test_s, embeddings, classes, index, filler_id)
    params = [*reader.linear_1.parameters(), *reader.linear_2.parameters()]
    opt = torch.optim.Adam(params, lr=sharpen.lr)
    flat_h, flat_s = train_h.reshape(-1, train_h.shape[-1]), train_s.reshape(-1)
    loss_cfg = ReaderConfig(**{**cfg.to_dict(), "mse_weight": sharpen.mse_weight})
    per_epoch = flat_h.shape[0] // sharpen.batch_cells
    total = sharpen.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total)
    order_rng = torch.Generator().manual_seed(0)
    history = []
    for epoch in tqdm(range(sharpen.epochs), desc="sharpen projector", disable=not progress):
        order = torch.randperm(flat_h.shape[0], generator=order_rng)
        for i in range(per_epoch):
            idx = order[i * sharpen.batch_cells:(i + 1) * sharpen.batch_cells]
            loss, _ = reader_loss(reader.project(flat_h[idx]), flat_s[idx], embeddings, classes, index, loss_cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        history.append({"epoch": epoch + 1, "loss": round(loss.item(), 4)})
    after = projection_error(reader, test_h, test_s, embeddings, classes, index, filler_id)
    log.info("sharpened projector: relative L2 error %.3f -> %.3f (median), character accuracy %.4f -> %.4f",
             before["rel_l2_median"], after["rel_l2_median"], before["char_accuracy"], after["char_accuracy"])
    return {"before": before, "after": after, "history": history}
