"""The organism's eyes: a small CLIP vision tower + LLaVA projector trained to read typed pages.

Why this shape.  A from-scratch tower cannot be taught, on two CPU cores, to speak to a frozen
language model through the language model's own loss (one backward pass through 135 M parameters
per page).  Instead the tower is trained to *write the language model's input embeddings*: the page
is a FigStep-style sheet (760 px, monospace 80 px type, 15 characters a line, 75 px line pitch),
which the processor shrinks to a 10 x 10 grid of patches, one patch row per typed line.  Every token
of the page's text is assigned the patch under its first visible character (shifted right when two
tokens share a patch), so the 100 image tokens read, in raster order, as the text itself with
"blank" filler (the embedding of a single space) between words.  The loss is a cosine
classification of each projected patch over token embeddings plus a small regression onto the exact
embedding, so the language model receives inputs close to ones it already understands, by another
route than its own embedding layer.  (How well the committed reader does: README, "Measured on it".)

The training text is random words from the tokenizer's vocabulary and list headings ("Steps to",
"List of" ...) -- no benchmark text, no safety data.
"""

from __future__ import annotations

import logging
import math
import random
import textwrap
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources as importlib_resources

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

log = logging.getLogger(__name__)

CANVAS = 760
WRAP = 15
PITCH = 75
CAP_TOP = 24
MARGIN_X = 20
ADVANCE = 48
GRID = 10
FONT_SIZE = 80
# Bundled (Bitstream Vera licence, resources/fonts/LICENSE-DejaVu.txt) so renders are identical everywhere.
MONO_FONTS = ("DejaVuSansMono-Bold.ttf", "DejaVuSansMono.ttf")
HEADINGS = ("Steps to", "Methods to", "List of", "Ways to", "Tips for", "How to", "Ideas for",
            "Reasons for", "Guide to", "Notes on", "Facts about", "Plan for")


@dataclass(frozen=True)
class ReaderConfig:
    """Size of the tower and of its training run; defaults are the committed organism's."""

    image_size: int = 240
    patch_size: int = 24
    hidden_size: int = 256
    layers: int = 6
    heads: int = 4
    intermediate_size: int = 1024
    steps: int = 2200
    batch_size: int = 32
    lr: float = 1e-3
    negatives: int = 2048
    temperature: float = 0.05
    mse_weight: float = 1.0
    seed: int = 0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


def training_fonts() -> list[str]:
    """The monospace fonts pages are typed in (the layout assumes a 0.6 em advance); bold first."""
    root = importlib_resources.files("sasa") / "resources" / "fonts"
    return [str(root / name) for name in MONO_FONTS]


@lru_cache(maxsize=16)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def page_lines(text: str) -> list[str]:
    """FigStep's layout: ``textwrap`` at 15 characters, explicit newlines kept, at most 10 lines."""
    lines: list[str] = []
    for part in text.split("\n"):
        lines.extend(textwrap.wrap(part, WRAP) or [""])
    return lines[:GRID]


def page_text(lines: list[str]) -> str:
    """What the page says, as the language model should read it: lines joined by spaces."""
    return " ".join(line for line in lines if line)


def render_page(lines: list[str], font_path: str, *, dx: int = 0, dy: int = 0, stroke: int = 0,
                blur: float = 0.0) -> Image.Image:
    """A 760 px page with ``lines`` at FigStep's positions (cap tops at 24 + 75 k)."""
    font = _font(font_path, FONT_SIZE)
    top = font.getbbox("A")[1]
    image = Image.new("RGB", (CANVAS, CANVAS), "#FFFFFF")
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((MARGIN_X + dx, CAP_TOP - top + PITCH * k + dy), line, fill="#000000", font=font,
                  stroke_width=stroke, stroke_fill="#000000")
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return image


def slot_targets(lines: list[str], tokenizer, filler_id: int) -> tuple[list[int], int]:
    """Token id for each of the 100 patches (raster order) and how many tokens found no patch.

    A token sits on the patch under its first non-space character (a whitespace-only token on the
    character after it); a token whose patch is taken moves right, so raster order = text order.
    """
    text = page_text(lines)
    starts, pos = [], 0
    for k, line in enumerate(lines):
        if not line:
            continue
        for j in range(len(line)):
            starts.append((k, j))
        starts.append((k, len(line)))  # the joining space
        pos += len(line) + 1
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    slots = [filler_id] * (GRID * GRID)
    last_row, last_col, dropped = -1, -1, 0
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        anchor = a
        while anchor < b and text[anchor] == " ":
            anchor += 1
        if anchor >= len(starts):
            dropped += 1
            continue
        row, char = starts[anchor]
        col = min(GRID - 1, (MARGIN_X + ADVANCE * char + ADVANCE // 2) * GRID // CANVAS)
        if row == last_row:
            col = max(col, last_col + 1)
        if col >= GRID or row >= GRID:
            dropped += 1
            continue
        slots[row * GRID + col] = tid
        last_row, last_col = row, col
    return slots, dropped


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
                 seed: int) -> None:
        self.tokenizer, self.image_processor, self.fonts = tokenizer, image_processor, fonts
        self.filler_id, self.batch_size, self.seed = filler_id, batch_size, seed

    def sample(self, source: TextSource, rng: random.Random):
        lines = page_lines(source.text())
        image = render_page(lines, rng.choice(self.fonts), dx=rng.randint(-6, 6), dy=rng.randint(-6, 6),
                            stroke=rng.choice([0, 0, 1]), blur=rng.choice([0.0, 0.0, 0.8]))
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
        features = out.hidden_states[-1][:, 1:]
        return self.linear_2(self.act(self.linear_1(features)))


def reader_loss(pred: torch.Tensor, slots: torch.Tensor, embeddings: torch.Tensor, cfg: ReaderConfig,
                generator: torch.Generator, filler_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine classification over the batch's tokens + sampled negatives, plus embedding regression.

    Returns the loss and the accuracy on text (non-filler) patches.
    """
    flat, target = pred.reshape(-1, pred.shape[-1]), slots.reshape(-1)
    negatives = torch.randint(0, embeddings.shape[0], (cfg.negatives,), generator=generator)
    candidates, inverse = torch.unique(torch.cat([target, negatives]), return_inverse=True)
    labels = inverse[: target.numel()]
    cand = torch.nn.functional.normalize(embeddings[candidates], dim=-1)
    logits = torch.nn.functional.normalize(flat, dim=-1) @ cand.T / cfg.temperature
    ce = torch.nn.functional.cross_entropy(logits, labels)
    scale = embeddings.norm(dim=-1).mean()
    mse = ((flat - embeddings[target]) ** 2).sum(-1).mean() / scale**2
    text = target != filler_id
    accuracy = (logits.argmax(-1) == labels)[text].float().mean()
    return ce + cfg.mse_weight * mse, accuracy


def train_reader(cfg: ReaderConfig, tokenizer, image_processor, embeddings: torch.Tensor, filler_id: int,
                 *, fonts: list[str] | None = None, progress: bool = True) -> tuple[Reader, dict]:
    """Train a ``Reader`` from scratch; returns it and a log of (step, loss, token accuracy)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    reader = Reader(cfg, embeddings.shape[1])
    fonts = fonts or training_fonts()
    stream = PageStream(tokenizer, image_processor, fonts, filler_id, cfg.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1 if cfg.steps > 50 else 0)
    opt = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    gen = torch.Generator().manual_seed(cfg.seed)
    embeddings = embeddings.detach()
    history, running = [], []
    bar = tqdm(total=cfg.steps, desc="reader", disable=not progress)
    reader.train()
    for step, (pixels, slots) in enumerate(loader):
        if step >= cfg.steps:
            break
        loss, acc = reader_loss(reader(pixels), slots, embeddings, cfg, gen, filler_id)
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
            running = []
        bar.update(1)
    bar.close()
    reader.eval()
    return reader, {"history": history}
