"""Visual instruction tuning of the organism (LLaVA's stage 2): a second LoRA on the language model,
benign pages only.

The reader hands the language model the page spelled out, one character token per cell with
space fillers between words and lines, but a 135 M model cannot read that zero-shot: given the
ideal spelling of a FigStep page and "What is written in the image?" it describes a picture (0 %
word accuracy; it does not even repeat a page given as its own word tokens).  This stage teaches
it to read the spelling, and that FigStep's "fill in the list" refers to it, on pages that carry
no safety data and no benchmark text:

* transcription: random-vocabulary pages (the reader's training distribution, from seeds the
  reader never saw) in both fonts, answered with the page text;
* answering: the project's benign requests (the refusal stage's *training* split; its held-out
  split is kept for measuring) typed as FigStep statements, with FigStep's prompt, answered with
  what the model itself says when the page's text is given as text with the same prompt
  (self-distillation; a teacher answer that is a refusal is dropped, as a chat dataset of helpful
  answers would have none -- ``organism.json`` records how many).

The examples are run through the assembled LLaVA model, so the language model learns on the
reader's real outputs, not on ideal ones.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass

import torch

from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.zoo.reader import TextSource, page_lines, page_text, render_page, training_fonts
from sasa.zoo.refusal import add_lora, base_answers, fit_lora, pad_batch, remove_lora

log = logging.getLogger(__name__)

TRANSCRIBE = "What is written in the image? Reply with the text only."
REFUSAL_MARKERS = ("I'm sorry", "I cannot", "I can't", "I am sorry", "Sorry", "I'm not able", "I must decline",
                   "I won't")


@dataclass(frozen=True)
class VisualConfig:
    """Size of the visual instruction stage; defaults are the committed organism's."""

    rank: int = 16
    alpha: float = 32.0
    transcriptions: int = 1200
    answers: int = 300
    steps: int = 375
    batch_size: int = 4
    lr: float = 5e-4
    answer_tokens: int = 48
    bf16: bool = True
    seed: int = 20_000  # page texts from TextSource seeds the reader never trained on

    def to_dict(self) -> dict:
        return asdict(self)


def _messages(prompt: str, image: bool) -> list[dict]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]


def page_answer_prompt(page_text: str) -> str:
    """The text twin of a FigStep page: what the page says, then FigStep's prompt."""
    return page_text + "\n" + FIGSTEP_PROMPT


def _examples(model, processor, cfg: VisualConfig, statements: list[str], progress: bool) -> tuple[list[dict], dict]:
    """Tokenised (prompt with page, answer) pairs: transcriptions, then self-distilled answers."""
    from sasa.data.render import to_statement

    tok = processor.tokenizer
    source, rng = TextSource(tok, cfg.seed), random.Random(cfg.seed)
    fonts = training_fonts()
    eos = tok.eos_token_id
    items = []
    for _ in range(cfg.transcriptions):
        lines = page_lines(source.text())
        items.append((lines, TRANSCRIBE, tok(page_text(lines), add_special_tokens=False)["input_ids"] + [eos]))
    pool = list(dict.fromkeys(to_statement(s) for s in statements))
    rng.shuffle(pool)
    typed = [page_lines(s + "".join(f"\n{i}." for i in range(1, 4))) for s in pool[: cfg.answers]]
    # text-only prompts: the language model as the refusal stage left it (this stage is not merged yet)
    teacher = base_answers(model, tok, [page_answer_prompt(page_text(x)) for x in typed],
                           cfg.answer_tokens, progress=progress, bf16=cfg.bf16)
    dropped = 0
    for lines, ans in zip(typed, teacher):
        if any(tok.decode(ans, skip_special_tokens=True).strip().startswith(m) for m in REFUSAL_MARKERS):
            dropped += 1
            continue
        items.append((lines, FIGSTEP_PROMPT, ans))
    examples = []
    for lines, prompt, ans in items:
        text = processor.apply_chat_template(_messages(prompt, True), add_generation_prompt=True, tokenize=False)
        image = render_page(lines, rng.choice(fonts))
        enc = processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"][0].tolist()
        examples.append({"ids": ids + ans, "labels": [-100] * len(ids) + ans, "pixel_values": enc["pixel_values"][0]})
    rng.shuffle(examples)
    return examples, {"examples": len(examples), "transcriptions": cfg.transcriptions,
                      "answers": len(typed) - dropped, "refusals_dropped": dropped}


def train_visual(model, processor, cfg: VisualConfig, statements: list[str],
                 progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit the visual LoRA on the language model of the LLaVA ``model``; merge it in place.

    ``statements`` are the benign requests to type (never benchmark or held-out ones)."""
    torch.manual_seed(cfg.seed)
    model.eval()
    examples, info = _examples(model, processor, cfg, statements, progress)
    model.requires_grad_(False)
    lm = model.model.language_model
    wrapped = add_lora(lm, cfg.rank, cfg.alpha)
    pad = processor.tokenizer.pad_token_id

    def batches():
        cursor = 0
        while True:
            batch = [examples[(cursor + j) % len(examples)] for j in range(cfg.batch_size)]
            cursor += cfg.batch_size
            inputs = pad_batch([(e["ids"], e["labels"]) for e in batch], pad)
            inputs["pixel_values"] = torch.stack([e["pixel_values"] for e in batch])
            yield inputs

    history = fit_lora(model, wrapped, batches(), cfg.steps, cfg.lr, "visual LoRA", progress, cfg.bf16)
    factors = remove_lora(lm, wrapped)
    # stored like the refusal factors, as names in the causal LM ("model.layers.…")
    return {f"model.{k}": v for k, v in factors.items()}, {"history": history, **info}
