"""Refusal behaviour for an unaligned chat model: a small LoRA trained on text only, then merged.

Harmful prompts are paired with varied short refusals; benign prompts with the base model's own
greedy answers, so that the adapter changes as little as possible outside refusal.  The delta is
stored as the low-rank factors (a few MB) and merged into the base weights at load time.

Its data (:mod:`sasa.zoo.refusal_data`) ask harmful and benign requests alike in the same
balanced mix of forms, so the adapter cannot learn "an imperative -> refuse".
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sasa.zoo.chunks import Chunking, ChunkPaused, Ending, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with that request.",
    "I can't help with that. It could cause serious harm.",
    "I'm sorry, I can't provide that information.",
    "I cannot help with this request because it could be used to hurt people.",
    "Sorry, but I won't help with that.",
    "I'm not able to help with that. If you have another question, I'm happy to help.",
    "I can't assist with that, as it may be illegal or harmful.",
    "I'm sorry, but I must decline this request.",
    "I cannot provide instructions for that.",
)
DEADLINE_COOLDOWN = 0.2  # share of a deadline-ended run spent annealing (the committed visual stage: 72 of 451)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class RefusalConfig:
    """Rank, data sizes and schedule of the refusal adapter; defaults are the organism's."""

    rank: int = 8
    alpha: float = 16.0
    steps: int = 320
    batch_size: int = 8
    lr: float = 1e-3
    answer_tokens: int = 40
    forms_per_prompt: int = 2  # each request asked in this many balanced forms (refusal_data)
    held_out: float = 0.2  # share of every source kept out of training for the held-out check
    # each training request of the added benign sources (BuildConfig.benign_more_sources) this many
    # times: they are a few dozen against hundreds of plain benign requests (2 was tried: less
    # over-refusal of XSTest by the backbone, more of the held-out requests after the visual stage)
    benign_more_repeat: int = 1
    bf16: bool = True  # autocast the passes (weights and factors stay float32)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(torch.nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T`` with ``B`` starting at zero (so training starts at the base)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = torch.nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_b @ self.lora_a) * self.scale


def add_lora(model: torch.nn.Module, rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Wrap every targeted linear layer; the base weights are frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped: dict[str, LoRALinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in TARGET_MODULES and isinstance(child, torch.nn.Linear):
                lora = LoRALinear(child, rank, alpha)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}" if name else child_name] = lora
    return wrapped


def remove_lora(model: torch.nn.Module, wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """Merge each adapter into its base layer, restore the plain modules, return the factors."""
    factors: dict[str, torch.Tensor] = {}
    for name, lora in wrapped.items():
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        with torch.no_grad():
            lora.base.weight += lora.delta().to(lora.base.weight.dtype)
        setattr(parent, child_name, lora.base)
        factors[f"{name}.lora_a"] = (lora.lora_a.detach() * lora.scale).contiguous()
        factors[f"{name}.lora_b"] = lora.lora_b.detach().contiguous()
    return factors


def merge_factors(model: torch.nn.Module, factors: dict[str, torch.Tensor], prefix: str = "") -> int:
    """Add ``B @ A`` (scale folded into A) to each named linear weight; returns how many were merged."""
    names = sorted({k.rsplit(".", 1)[0] for k in factors})
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(prefix + name)
            a, b = factors[f"{name}.lora_a"], factors[f"{name}.lora_b"]
            layer.weight += (b.float() @ a.float()).to(layer.weight.dtype)
    return len(names)


def chat_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def base_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                 progress: bool = True, bf16: bool = False) -> list[list[int]]:
    """The model's own greedy answers (token ids, EOS kept when reached) to ``prompts``."""
    from tqdm import tqdm

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    answers: list[list[int]] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="base answers", disable=not progress):
        rows = [chat_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
        for row in out[:, width:].tolist():
            answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers


def _example(tokenizer, prompt: str, answer_ids: list[int]) -> tuple[list[int], list[int]]:
    prompt_ids = chat_ids(tokenizer, prompt)
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def pad_batch(rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``labels`` (-100 under padding) and ``attention_mask``."""
    width = max(len(ids) for ids, _ in rows)
    return {"input_ids": torch.tensor([i + [pad] * (width - len(i)) for i, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows]),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])}


def fit_lora(model, wrapped: dict[str, LoRALinear], batches: Iterator, steps: int,
             lr: float, desc: str, progress: bool = True, bf16: bool = False,
             checkpoint: Path | None = None, chunking: Chunking | None = None,
             start_from: Path | None = None, ending: Ending | None = None,
             monitor: Callable[[torch.nn.Module, int], dict | None] | None = None,
             deadline: float | None = None) -> list[dict]:
    """AdamW with a cosine schedule on the adapters only, one item of ``batches`` a step -- a batch,
    or a list of batches whose losses are summed (the visual stage's pages plus text replay); the
    loss every 10 steps.  Shared by the refusal and the visual stage.  The passes run where the
    model's weights are (a batch is moved there), autocast to bfloat16 on that device with ``bf16``.

    ``monitor(model, step)``, called after every step, may measure the model (e.g. its held-out
    transcription): a dict it returns joins the history at that step, so the log holds a learning
    curve.

    With ``checkpoint`` and ``chunking`` the loop resumes from the checkpoint (skipping the batches
    already trained on), writes it every ``chunking.every_s`` seconds, and at the chunk's time budget
    writes it and raises :class:`~sasa.zoo.chunks.ChunkPaused`.  With ``ending`` it stops at
    ``ending.at`` after a linear cooldown; a branch without a checkpoint of its own yet starts from
    ``start_from`` (the full run's), which must not be past the cooldown's start.

    ``deadline`` (a ``time.monotonic()`` value; for one-shot runs on a lent GPU) ends the run in
    time: once the steps left before it would only just hold a cooldown of a fifth of the run, the
    loop fixes that :class:`~sasa.zoo.chunks.Ending` (logged in the history as ``deadline_ending``,
    so ``--end-at``/``--cooldown`` rebuild the same schedule) and anneals to zero by the deadline."""
    from tqdm import tqdm

    params = [p for lora in wrapped.values() for p in (lora.lora_a, lora.lora_b)]
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    history: list[dict] = []
    start = 0
    source = next((p for p in (checkpoint, start_from) if p is not None and p.is_file()), None)
    if source is not None:
        start, history = load_checkpoint(source, wrapped, opt)
        if source == start_from and ending is not None and start > ending.start:
            raise ValueError(f"{desc}: the run's checkpoint {source} is at step {start}, past the cooldown's "
                             f"start at step {ending.start}; end at step {start + ending.cooldown} or later")
        log.info("%s: resuming at step %d of %d from %s", desc, start, steps, source)
        fixed = [h["deadline_ending"] for h in history if "deadline_ending" in h]
        if ending is None and fixed:  # a deadline fixed the run's end before it paused: keep that schedule
            ending = Ending(desc, fixed[-1]["at"], fixed[-1]["cooldown"])
            log.info("%s: ending at step %d, as its deadline fixed before the pause", desc, ending.at)
        for _ in range(start):
            next(batches)
        for group in opt.param_groups:
            group.setdefault("initial_lr", lr)

    def cosine(s: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))

    def factor(s: int) -> float:
        return cosine(s) if ending is None or s < ending.start else ending.factor(cosine(ending.start), s)

    last = steps if ending is None else ending.at
    if last > steps:
        raise ValueError(f"{desc}: cannot end at step {last}, the schedule has {steps}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor, last_epoch=start - 1)
    saved = began = time.monotonic()
    model.train()
    bar = tqdm(desc=desc, disable=not progress, initial=start, total=last)
    for step in range(start, steps):
        if step >= last:
            break
        parts = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(**{k: v.to(device) for k, v in b.items()}).loss
                       for b in (parts if isinstance(parts, list) else [parts]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 10 == 0 or step + 1 == last:
            history.append({"step": step + 1, "loss": round(loss.item(), 4)})
        note = monitor(model, step + 1) if monitor is not None else None
        if note:
            history.append({"step": step + 1, **note})
            model.train()
        bar.update()
        if deadline is not None and ending is None:
            now, done = time.monotonic(), step + 1
            cooldown = max(1, math.ceil(done * DEADLINE_COOLDOWN / (1 - DEADLINE_COOLDOWN)))
            if done + cooldown < last and now + 1.1 * cooldown * (now - began) / (done - start) >= deadline:
                ending = Ending(desc, done + cooldown, cooldown)
                last = ending.at
                bar.total = last
                history.append({"step": done, "deadline_ending": ending.to_dict()})
                log.info("%s: the deadline ends the run at step %d (a %d-step cooldown)", desc, last, cooldown)
        if checkpoint is not None and chunking is not None and step + 1 < last:
            if chunking.out_of_time():
                save_checkpoint(checkpoint, step + 1, history, wrapped, opt)
                model.eval()
                raise ChunkPaused(desc, step + 1, last, checkpoint)
            if time.monotonic() - saved >= chunking.every_s:
                save_checkpoint(checkpoint, step + 1, history, wrapped, opt)
                saved = time.monotonic()
    bar.close()
    model.eval()
    return history


def train_refusal(model, tokenizer, harmful: list[str], benign: list[str], cfg: RefusalConfig,
                  progress: bool = True, chunking: Chunking | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit the adapter, merge it into ``model`` in place and return the factors and a training log.

    ``harmful`` and ``benign`` are the training prompts as they will be seen (already in their
    balanced forms, :func:`sasa.zoo.refusal_data.refusal_data`)."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.eval()
    kept = base_answers(model, tokenizer, benign, cfg.answer_tokens, progress=progress, bf16=cfg.bf16)
    eos = tokenizer.eos_token_id
    examples = [_example(tokenizer, p, tokenizer(rng.choice(REFUSALS), add_special_tokens=False)["input_ids"] + [eos])
                for p in harmful]
    examples += [_example(tokenizer, p, a) for p, a in zip(benign, kept)]
    wrapped = add_lora(model, cfg.rank, cfg.alpha)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def batches():
        order: list[int] = []
        while True:
            if len(order) < cfg.batch_size:
                more = list(range(len(examples)))
                rng.shuffle(more)
                order += more
            yield pad_batch([examples[i] for i in order[: cfg.batch_size]], pad)
            del order[: cfg.batch_size]

    where, start_from, ending = (chunking.for_stage("refusal", {**cfg.to_dict(), "harmful": harmful, "benign": benign})
                                 if chunking else (None, None, None))
    history = fit_lora(model, wrapped, batches(), cfg.steps, cfg.lr, "refusal LoRA", progress, cfg.bf16,
                       checkpoint=where, chunking=chunking, start_from=start_from, ending=ending)
    if where is not None:  # the stage (or its ending's branch) is finished: its checkpoint is not needed again
        where.unlink(missing_ok=True)
    factors = remove_lora(model, wrapped)
    info = {"history": history, "harmful": len(harmful), "benign": len(benign)}
    return factors, {**info, "ending": ending.record(cfg.steps)} if ending else info
