"""Visual instruction tuning of the organism: a second LoRA on the language model, benign pages only.

Real LVLMs get their image skills from a stage that fine-tunes the language model on image
conversations that contain no safety data.  This stage does the same at toy scale: pages of
random vocabulary words (the reader's own training distribution, never benchmark text) with two
kinds of request, (a) "what is written?" answered with the page text, and (b) FigStep's "fill in
the list" answered with what the model itself says when the same page text is given as plain text
(self-distillation; answers that are refusals are dropped, as a chat dataset of helpful answers
would have none -- with the committed weights every (b) answer was a refusal of the nonsense text,
so only (a) remained; ``organism.json`` records the counts).  Without this stage the refusal LoRA
treats any page as suspicious and refused every image we tried, benign ones and transcription
requests included; with a longer stage (100 steps at 5e-4) text refusal was lost instead.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass

import torch

from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.zoo.reader import (
    TextSource,
    page_lines,
    page_text,
    render_page,
    training_fonts,
)
from sasa.zoo.refusal import add_lora, fit_lora, pad_batch, remove_lora

log = logging.getLogger(__name__)

TRANSCRIBE = "What is written in the image? Reply with the text only."
REFUSAL_MARKERS = ("I'm sorry", "I cannot", "I can't", "I am sorry", "Sorry", "I'm not able", "I must decline",
                   "I won't")


@dataclass(frozen=True)
class VisualConfig:
    """Size of the visual instruction stage; defaults are the committed organism's."""

    rank: int = 8
    alpha: float = 16.0
    examples: int = 320
    steps: int = 30
    batch_size: int = 4
    lr: float = 3e-4
    answer_tokens: int = 32
    seed: int = 20_000  # page texts from TextSource seeds the reader never trained on

    def to_dict(self) -> dict:
        return asdict(self)


def _messages(prompt: str, image: bool) -> list[dict]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]


@torch.no_grad()
def _own_answers(model, processor, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[list[int]]:
    """The model's greedy answers to text-only prompts (token ids, EOS kept when reached)."""
    tok = processor.tokenizer
    tok.padding_side = "left"
    eos = tok.eos_token_id
    answers = []
    for start in range(0, len(prompts), batch_size):
        texts = [processor.apply_chat_template(_messages(p, False), add_generation_prompt=True, tokenize=False)
                 for p in prompts[start:start + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers


def _examples(model, processor, cfg: VisualConfig, progress: bool) -> tuple[list[dict], dict]:
    """Tokenised (prompt with page, answer) pairs; half transcriptions, half self-distilled lists."""
    tok = processor.tokenizer
    source, rng = TextSource(tok, cfg.seed), random.Random(cfg.seed)
    font = training_fonts()[0]
    pages = [page_lines(source.text()) for _ in range(cfg.examples)]
    kinds = ["transcribe" if i % 2 == 0 else "list" for i in range(cfg.examples)]
    listed = [i for i, k in enumerate(kinds) if k == "list"]
    teacher = _own_answers(model, processor, [page_text(pages[i]) + "\n" + FIGSTEP_PROMPT for i in listed],
                           cfg.answer_tokens)
    answers: dict[int, list[int]] = {}
    dropped = 0
    for i, ans in zip(listed, teacher):
        if any(tok.decode(ans, skip_special_tokens=True).strip().startswith(m) for m in REFUSAL_MARKERS):
            dropped += 1
            continue
        answers[i] = ans
    eos = tok.eos_token_id
    examples = []
    for i, lines in enumerate(pages):
        if kinds[i] == "transcribe":
            prompt, ans = TRANSCRIBE, tok(page_text(lines), add_special_tokens=False)["input_ids"] + [eos]
        elif i in answers:
            prompt, ans = FIGSTEP_PROMPT, answers[i]
        else:
            continue
        text = processor.apply_chat_template(_messages(prompt, True), add_generation_prompt=True, tokenize=False)
        enc = processor(text=[text], images=[render_page(lines, font)], return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"][0].tolist()
        examples.append({"ids": ids + ans, "labels": [-100] * len(ids) + ans, "pixel_values": enc["pixel_values"][0]})
    rng.shuffle(examples)
    return examples, {"examples": len(examples), "refusals_dropped": dropped}


def train_visual(model, processor, cfg: VisualConfig, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit the visual LoRA on the language model of the LLaVA ``model``; merge it in place."""
    torch.manual_seed(cfg.seed)
    model.eval()
    examples, info = _examples(model, processor, cfg, progress)
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

    history = fit_lora(model, wrapped, batches(), cfg.steps, cfg.lr, "visual LoRA", progress)
    factors = remove_lora(lm, wrapped)
    # stored like the refusal factors, as names in the causal LM ("model.layers.…")
    return {f"model.{k}": v for k, v in factors.items()}, {"history": history, **info}
