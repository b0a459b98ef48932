"""Visual instruction tuning of the organism (LLaVA's stage 2): a second LoRA on the language model,
benign pages only.

The reader hands the language model the page spelled out, one character token per cell with
space fillers between words and lines, but a 135 M model cannot read that zero-shot: given the
ideal spelling of a FigStep page and "What is written in the image?" it describes a picture (0 %
word accuracy; it does not even repeat a page given as its own word tokens).  This stage teaches
it to read the spelling, and that FigStep's "fill in the list" refers to it, on pages that carry
no safety data and no benchmark text:

* transcription: pages typed in both fonts, answered with the page text.  A ``natural`` share is
  the project's benign requests (the refusal stage's *training* split) as FigStep statements, so
  the model reads English as FigStep types it; the rest are random-vocabulary pages (from seeds
  the reader never saw), so it reads the letters rather than guessing from the first word;
* answering: the same benign requests typed as FigStep statements, with FigStep's prompt,
  answered with what the model itself says to the request as text (self-distillation).  The
  teacher prompt is the request as written: given the page's text with FigStep's prompt ("the
  image shows a list ...") as text, the refusal backbone declined 298 of 300 benign requests, so
  no answer examples survived.  A teacher answer that is a refusal is still dropped
  (``organism.json`` records how many).

* replay: every step also takes ``replay`` text-only rows from the refusal stage's own training
  data -- half harmful requests with a refusal, half benign requests with the backbone's own
  answer -- in a second forward whose loss is added.  LLaVA-1.5 mixes language-only
  conversations into its stage 2 for the same reason: without them both earlier visual LoRAs
  erased the text refusal (held-out harmful text refused 93 % by the backbone, 0-3 % after).
  Harmful content is never typed on a page, so any image refusal still transfers from text.

The reader is frozen, so its output for each page is computed once and the language model trains
on it as ``inputs_embeds`` -- the LLaVA forward without re-running the tower each step.  A
curriculum makes the steps cheaper: first ``compact_steps`` on the page's cells with the blank
rows and the empty ends of lines cut out (one filler kept at each line end; a third of the
sequence, so twice the batch), then ``steps`` on the full 256-cell layout the model sees at run
time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from sasa.store.atomic import atomic_path
from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.data.attacks import to_statement
from sasa.data.pages import page_lines, page_text, page_text_prompt
from sasa.data.typeset import draw_page
from sasa.zoo.chunks import Chunking
from sasa.zoo.reader import GRID, ROWS, TextSource, english_words, mmap_large_allocations, training_fonts
from sasa.zoo.refusal import (
    REFUSALS,
    add_lora,
    base_answers,
    chat_ids,
    fit_lora,
    pad_batch,
    remove_lora,
)

log = logging.getLogger(__name__)

TRANSCRIBE = "What is written in the image? Reply with the text only."
REFUSAL_MARKERS = ("I'm sorry", "I cannot", "I can't", "I am sorry", "Sorry", "I'm not able", "I must decline",
                   "I won't")
LIST_TAIL = "".join(f"\n{i}." for i in range(1, 4))


@dataclass(frozen=True)
class VisualConfig:
    """Size of the visual instruction stage; defaults are the committed organism's."""

    rank: int = 16
    alpha: float = 32.0
    transcriptions: int = 1200
    natural: float = 0.6  # share of transcription pages that are the project's benign statements
    answers: int = 200
    compact_steps: int = 120
    compact_batch_size: int = 8
    steps: int = 30
    batch_size: int = 4
    lr: float = 5e-4
    answer_tokens: int = 48
    replay: int = 2  # text-only refusal-stage rows per step (half harmful, half benign); 0 = none
    # replay each request also as its page's text twin (statement, list, FigStep's prompt), so the
    # text refuses the form the image takes; the project's requests only, never FigStep's
    twin_replay: bool = False
    # 0: the compact steps, then the full-layout ones (the committed order); N: every N-th step is a
    # full-layout step instead, so that every checkpoint of a long build has seen the layout it reads
    full_every: int = 0
    # a page answer begins with the page's heading on a line of its own, then the teacher's answer:
    # the model says what it read before it acts on it (as LLaVA answers often restate the image)
    answer_heading: bool = False
    # each page answer drawn this many times (a font drawn each time), so that a stage with many
    # transcriptions still sees page answers among its pages
    answer_repeats: int = 1
    # the random-word pages' words: "vocabulary" (the tokenizer's, Zipf-weighted by id) or "english"
    # (English word frequency, :func:`~sasa.zoo.reader.english_words`), which taught reading faster
    # in the learning curves (experiments/organism-reading)
    random_words: str = "vocabulary"
    bf16: bool = False  # trained in float32 on a CPU without native bfloat16
    seed: int = 20_000  # page texts from TextSource seeds the reader never trained on

    def to_dict(self) -> dict:
        return asdict(self)


def _messages(prompt: str, image: bool) -> list[dict]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]


def text_twin(request: str) -> str | None:
    """What a FigStep page made from ``request`` says, as text, with FigStep's prompt (None when
    the request has no statement form)."""
    try:
        statement = to_statement(request)
    except ValueError:
        return None
    return page_text_prompt(page_text(page_lines(statement + LIST_TAIL)))


def page_answer(tok, text: str, teacher: list[int], heading: bool) -> list[int]:
    """The target answer to a page with FigStep's prompt: the teacher's answer to the request as
    text, after the page's heading (its first line) on a line of its own when ``heading``."""
    if not heading:
        return list(teacher)
    return tok(text.split("\n", 1)[0] + "\n", add_special_tokens=False)["input_ids"] + list(teacher)


def compact_cells(lines: list[str]) -> list[int]:
    """Cell indices (raster order) that carry the page: each line's characters, then the blank
    cell after it as its line break; blank rows and the empty ends of lines left out."""
    cells: list[int] = []
    for k, line in enumerate(lines[: len(ROWS)]):
        width = len(line.rstrip())
        if width:
            cells.extend(ROWS[k] * GRID + j for j in range(min(width + 1, GRID)))
    return cells


def _texts(cfg: VisualConfig, tok, statements: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Transcription page texts, and the answer pages' statements with their teacher prompts."""
    rng = random.Random(cfg.seed)
    source = TextSource(tok, cfg.seed)
    if cfg.random_words == "english":
        source.use_words(english_words())
    elif cfg.random_words != "vocabulary":
        raise ValueError(f"random_words: {cfg.random_words!r}; choose 'vocabulary' or 'english'")
    requests = list(dict.fromkeys(statements))
    typed = {r: to_statement(r) for r in requests}
    pool = list(dict.fromkeys(typed.values()))
    texts = []
    for _ in range(cfg.transcriptions):
        if pool and rng.random() < cfg.natural:
            s = rng.choice(pool)
            texts.append(s + LIST_TAIL if rng.random() < 0.7 else s)
        else:
            texts.append(source.text())
    rng.shuffle(requests)
    chosen = requests[: cfg.answers]
    return texts, [typed[r] + LIST_TAIL for r in chosen], chosen


def _render(job: tuple[list[list[str]], list[int], object]):
    """Pixels of pages drawn in the given training fonts (by index) through ``image_processor``."""
    pages, fonts, image_processor = job
    faces = training_fonts()
    images = [draw_page(lines, faces[i]) for lines, i in zip(pages, fonts)]
    return image_processor(images, return_tensors="np")["pixel_values"]


@torch.no_grad()
def _page_features(model, processor, pages: list[list[str]], rng: random.Random, batch: int = 16,
                   progress: bool = True, workers: int = 1) -> list[torch.Tensor]:
    """The frozen reader's projected cells for each page (float16, on the CPU; one font drawn per
    page).  ``workers`` > 1 draws and preprocesses the pages in that many processes (the reader's
    pass is cheap beside them on a GPU); the pages and their fonts are the same either way."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    from sasa.zoo.scoring import image_features

    n_fonts = len(training_fonts())
    fonts = [rng.randrange(n_fonts) for _ in pages]  # rng.choice's draws: the fonts of the sequential build
    jobs = [(pages[i:i + batch], fonts[i:i + batch], processor.image_processor) for i in range(0, len(pages), batch)]
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    feats: list[torch.Tensor] = []
    try:
        rendered = pool.map(_render, jobs) if pool else map(_render, jobs)
        for pixels in tqdm(rendered, total=len(jobs), desc="reader cells", unit="batch", disable=not progress):
            feats.extend(f.half().cpu() for f in image_features(model, torch.from_numpy(pixels)))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return feats


def _examples(model, processor, cfg: VisualConfig, statements: list[str], harmful: list[str],
              progress: bool, workers: int = 1) -> tuple[list[dict], dict[str, list], dict]:
    """(prompt around the image, answer, page lines, reader features) for every page example, and
    the text-only replay rows (``{"harmful": [...], "benign": [...]}``, each ``(ids, labels)``)."""
    tok = processor.tokenizer
    eos = tok.eos_token_id
    texts, answer_pages, teacher_prompts = _texts(cfg, tok, statements)
    teacher = base_answers(model, tok, teacher_prompts, cfg.answer_tokens, progress=progress, bf16=cfg.bf16)
    items = [(page_lines(t), TRANSCRIBE, None) for t in texts]
    dropped = 0
    replay: dict[str, list] = {"harmful": [], "benign": []}
    for text, request, ans in zip(answer_pages, teacher_prompts, teacher):
        if any(tok.decode(ans, skip_special_tokens=True).strip().startswith(m) for m in REFUSAL_MARKERS):
            dropped += 1
            continue
        items += [(page_lines(text), FIGSTEP_PROMPT, page_answer(tok, text, ans, cfg.answer_heading))] * cfg.answer_repeats
        replay["benign"].append(_text_row(tok, request, ans))
        twin = text_twin(request) if cfg.twin_replay else None
        if twin is not None:
            replay["benign"].append(_text_row(tok, twin, ans))
    rng = random.Random(cfg.seed + 2)
    for request in harmful:
        refusal = tok(rng.choice(REFUSALS), add_special_tokens=False)["input_ids"] + [eos]
        replay["harmful"].append(_text_row(tok, request, refusal))
        twin = text_twin(request) if cfg.twin_replay else None
        if twin is not None:
            replay["harmful"].append(_text_row(tok, twin, refusal))
    rng = random.Random(cfg.seed + 1)
    feats = _page_features(model, processor, [lines for lines, _, _ in items], rng, progress=progress,
                           workers=workers)
    image_id = model.config.image_token_index
    templates = {}
    for prompt in {prompt for _, prompt, _ in items}:  # two prompts: template each once
        text = processor.apply_chat_template(_messages(prompt, True), add_generation_prompt=True, tokenize=False)
        templates[prompt] = tok(text, add_special_tokens=False)["input_ids"]
    examples = []
    for (lines, prompt, ans), f in zip(items, feats):
        ids = templates[prompt]
        at = ids.index(image_id)
        if ans is None:
            ans = tok(page_text(lines), add_special_tokens=False)["input_ids"] + [eos]
        examples.append({"before": ids[:at], "after": ids[at + 1:], "answer": ans, "features": f,
                         "cells": compact_cells(lines)})
    rng.shuffle(examples)
    return examples, replay, {"examples": len(examples), "transcriptions": len(texts),
                              "answers": len(answer_pages) - dropped, "refusals_dropped": dropped,
                              "replay_harmful": len(replay["harmful"]), "replay_benign": len(replay["benign"])}


def _save_examples(path, examples: list[dict], replay: dict[str, list], info: dict) -> None:
    """The stage's examples in one safetensors file: the reader's cells stacked, the token ids in
    the header as JSON (no pickle)."""
    from safetensors.torch import save_file

    rest = [{k: v for k, v in e.items() if k != "features"} for e in examples]
    meta = {"examples": json.dumps(rest), "replay": json.dumps(replay), "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"features": torch.stack([e["features"] for e in examples])}, str(tmp), metadata=meta)


def _load_examples(path) -> tuple[list[dict], dict[str, list], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        features = fh.get_tensor("features")
    examples = [{**e, "features": f} for e, f in zip(json.loads(meta["examples"]), features)]
    replay = {k: [tuple(row) for row in rows] for k, rows in json.loads(meta["replay"]).items()}
    return examples, replay, json.loads(meta["info"])


def _text_row(tok, prompt: str, answer: list[int]) -> tuple[list[int], list[int]]:
    ids = chat_ids(tok, prompt)
    return ids + answer, [-100] * len(ids) + answer


def _batch(model, examples: list[dict], compact: bool, pad: int) -> dict[str, torch.Tensor]:
    """``inputs_embeds`` with the reader's cells (all 256, or the compact ones) where the image goes."""
    rows, images = [], []
    for e in examples:
        f = e["features"][e["cells"]] if compact else e["features"]
        ids = e["before"] + [pad] * f.shape[0] + e["after"]
        rows.append((ids + e["answer"], [-100] * len(ids) + e["answer"]))
        images.append((len(e["before"]), f))
    inputs = {k: v.to(model.device) for k, v in pad_batch(rows, pad).items()}
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
        for row, (start, f) in enumerate(images):
            embeds[row, start:start + f.shape[0]] = f.to(embeds.device, embeds.dtype)
    inputs["inputs_embeds"] = embeds
    return inputs


def reading_monitor(processor, texts: list[str], every: int, max_new_tokens: int = 40):
    """A :func:`~sasa.zoo.refusal.fit_lora` monitor: every ``every`` steps, the mean word accuracy
    (:func:`~sasa.zoo.scoring.page_accuracy`, in %) of greedy transcriptions of ``texts`` typed as
    FigStep pages (FigStep's font): the stage's learning curve."""
    from sasa.zoo.scoring import page_accuracy, transcribe

    images = [draw_page(page_lines(t)) for t in texts]
    refs = [page_text(page_lines(t)) for t in texts]

    def monitor(model, step: int) -> dict | None:
        if step % every:
            return None
        model.eval()
        hyps = transcribe(model, processor, images, max_new_tokens)
        return {"heldout_transcription": round(100 * sum(map(page_accuracy, refs, hyps)) / len(refs), 1)}

    return monitor


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, shapes and float32 values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def continue_factors(wrapped: dict, factors: dict[str, torch.Tensor]) -> None:
    """Start the adapters at stored factors (``model.``-prefixed names, scale folded into A, as
    :func:`~sasa.zoo.refusal.remove_lora` returns them), so training continues that LoRA."""
    names = {k[len("model."):].rsplit(".", 1)[0] for k in factors}
    if names != set(wrapped):
        raise ValueError(f"the factors to continue from cover other layers than the adapters "
                         f"({len(names ^ set(wrapped))} differ, e.g. {sorted(names ^ set(wrapped))[:2]})")
    with torch.no_grad():
        for name, lora in wrapped.items():
            a, b = factors[f"model.{name}.lora_a"], factors[f"model.{name}.lora_b"]
            if a.shape != lora.lora_a.shape:
                raise ValueError(f"{name}: factors of rank {a.shape[0]}, the adapter has rank {lora.lora_a.shape[0]}")
            lora.lora_a.copy_(a.float() / lora.scale)
            lora.lora_b.copy_(b.float())


def schedule(examples: list[dict], replay: dict[str, list], cfg: VisualConfig):
    """Per step: the page examples (cycled in order), the text replay rows (each pool shuffled once
    and cycled; ``cfg.replay`` rows, the odd one harmful), and whether the step is compact."""
    rng = random.Random(cfg.seed + 3)
    pools = {kind: rng.sample(rows, len(rows)) for kind, rows in replay.items()}
    share = {"harmful": cfg.replay - cfg.replay // 2, "benign": cfg.replay // 2}
    cursor, taken = 0, dict.fromkeys(share, 0)
    for step in range(cfg.compact_steps + cfg.steps):
        compact = (step + 1) % cfg.full_every != 0 if cfg.full_every else step < cfg.compact_steps
        size = cfg.compact_batch_size if compact else cfg.batch_size
        pages = [examples[(cursor + j) % len(examples)] for j in range(size)]
        cursor += size
        text = []
        for kind, n in share.items():
            pool = pools.get(kind) or []
            text += [pool[(taken[kind] + j) % len(pool)] for j in range(n if pool else 0)]
            taken[kind] += n
        yield pages, text, compact


def train_visual(model, processor, cfg: VisualConfig, statements: list[str], harmful: list[str] = (),
                 progress: bool = True, chunking: Chunking | None = None, init: dict[str, torch.Tensor] | None = None,
                 stage: str = "visual", workers: int = 1,
                 monitor: Callable[[torch.nn.Module, int], dict | None] | None = None,
                 deadline: float | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit the visual LoRA on the language model of the LLaVA ``model`` (on its device); merge it
    in place; the factors come back on the CPU.

    ``statements`` are the benign requests to type, ``harmful`` the refusal stage's harmful
    training requests replayed as text (never benchmark or held-out ones).  ``init``: the stored
    factors of an earlier visual stage to continue from (the acting stage), of the same rank;
    ``stage`` names the checkpoints; ``workers`` processes draw the pages; ``monitor`` and
    ``deadline`` as in :func:`~sasa.zoo.refusal.fit_lora`."""
    mmap_large_allocations()
    torch.manual_seed(cfg.seed)
    model.eval()
    settings = cfg.to_dict()
    # the weights it starts from (reader, merged refusal LoRA) belong to the key: examples and a
    # checkpoint made on another reader must not be resumed
    key = {**settings, "statements": statements, "harmful": list(harmful), "model": weights_digest(model)}
    if init is not None:
        key["init"] = hashlib.sha256(b"".join(init[k].float().numpy().tobytes() for k in sorted(init))).hexdigest()
    cache = chunking.path(f"{stage}-examples", key) if chunking else None
    if cache is not None and cache.is_file():
        examples, replay, info = _load_examples(cache)
        log.info("visual stage: %d examples read back from %s", len(examples), cache)
    else:
        examples, replay, info = _examples(model, processor, cfg, statements, list(harmful), progress, workers)
        if cache is not None:  # a chunked build computes its examples (teacher answers, reader cells) once
            _save_examples(cache, examples, replay, info)
    model.requires_grad_(False)
    lm = model.model.language_model
    wrapped = add_lora(lm, cfg.rank, cfg.alpha)
    if init is not None:
        continue_factors(wrapped, init)
    pad = processor.tokenizer.pad_token_id

    def batches():
        for pages, text, compact in schedule(examples, replay, cfg):
            yield [_batch(model, pages, compact, pad)] + ([pad_batch(text, pad)] if text else [])

    where, start_from, ending = chunking.for_stage(stage, key) if chunking else (None, None, None)
    steps = cfg.compact_steps + cfg.steps
    history = fit_lora(model, wrapped, batches(), steps, cfg.lr, f"{stage} LoRA", progress, cfg.bf16,
                       checkpoint=where, chunking=chunking, start_from=start_from, ending=ending, monitor=monitor,
                       deadline=deadline)
    # the stage is finished: its checkpoint and examples are not needed again -- unless this was an
    # ending's branch, whose full run may still continue from its own checkpoint and examples
    for done in (where,) if ending else (where, cache):
        if done is not None:
            done.unlink(missing_ok=True)
    factors = remove_lora(lm, wrapped)
    if ending:
        info = {**info, "ending": ending.record(steps)}
    by_deadline = [h["deadline_ending"] for h in history if "deadline_ending" in h]
    if by_deadline:
        info = {**info, "ending": {**by_deadline[-1], "scheduled": steps, "by": "deadline"}}
    # stored like the refusal factors, as names in the causal LM ("model.layers.…")
    return {f"model.{k}": v.cpu() for k, v in factors.items()}, {"history": history, **info}
