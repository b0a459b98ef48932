"""Batched feature extraction over samples: the probe's inputs, with progress and clear errors."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from sasa.data.sample import Sample, unreadable
from sasa.distributed import Shard, current_shard
from sasa.engine import SASAEngine
from sasa.models.adapters import Adapter
from sasa.store.records import Record

logger = logging.getLogger(__name__)


class SampleError(ValueError):
    """A sample that cannot be fed to the model; the message names its id."""


def load_image(sample: Sample) -> Image.Image | None:
    if sample.image is None:
        return None
    try:
        with Image.open(sample.image) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise SampleError(f"sample {sample.id!r}: image not found: {sample.image}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SampleError(f"sample {sample.id!r}: cannot read image {sample.image}: {exc}") from None


ON_ERROR = ("raise", "skip")


def run_or_skip(chunk: Sequence[Sample], run: Any, mode: str, on_error: str = "raise") -> list:
    """``run(chunk)`` -> records; with ``on_error="skip"`` a batch that fails on a bad sample is rerun
    one sample at a time and each bad one becomes an ``error`` record (its id and the reason), so one
    unreadable image does not stop the run or spoil its batch."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    broken = [s for s in chunk if unreadable(s)]
    if broken:
        if on_error == "raise":
            raise SampleError(unreadable(broken[0]))
        done = {id(s): [Record.from_sample(s, mode, "error", error=unreadable(s), prompt=s.prompt)] for s in broken}
        rest = [s for s in chunk if id(s) not in done]
        for s, rec in zip(rest, run_or_skip(rest, run, mode, on_error) if rest else []):
            done[id(s)] = [rec]
        return [rec for s in chunk for rec in done[id(s)]]
    try:
        return run(chunk)
    except SampleError as exc:
        if on_error == "raise":
            raise
        if len(chunk) == 1:
            logger.warning("skipping %s", exc)
            return [Record.from_sample(chunk[0], mode, "error", error=str(exc), prompt=chunk[0].prompt)]
    return [rec for sample in chunk for rec in run_or_skip([sample], run, mode, on_error)]


def run_into(path: str | os.PathLike, todo: Sequence[Sample], batch_size: int, run: Any, mode: str,
             on_error: str = "raise", progress: bool = True, desc: str | None = None) -> Iterable[list[dict]]:
    """The resumable loop: ``run`` each batch of ``todo`` (through :func:`run_or_skip`), append its
    records to ``path`` in one write, and yield them as JSON dicts (the caller picks ``todo``
    from what ``path`` already holds)."""
    from sasa.store.records import append_records

    bar = tqdm(total=len(todo), desc=desc or mode, unit="prompt", disable=not progress)
    for chunk in batches(todo, batch_size):
        records = [r.to_json() for r in run_or_skip(chunk, run, mode, on_error)]
        append_records(path, records)
        bar.update(len(chunk))
        yield records
    bar.close()


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    if size < 1:
        raise ValueError("batch size must be >= 1")
    for i in range(0, len(items), size):
        yield items[i:i + size]


def encode_samples(engine: SASAEngine | Adapter, samples: Sequence[Sample]) -> dict:
    """Model inputs for samples (via an engine or an adapter); errors name the samples."""
    images = [load_image(s) for s in samples]
    for s in samples:
        if not s.prompt.strip():
            raise SampleError(f"sample {s.id!r}: empty prompt")
    try:
        return engine.encode([s.prompt for s in samples], images)
    except ValueError as exc:
        ids = ", ".join(repr(s.id) for s in samples)
        raise SampleError(f"samples [{ids}]: {exc}") from None


def extract_features(
    engine: SASAEngine,
    samples: Sequence[Sample],
    batch_size: int = 8,
    progress: bool = True,
    capture_layers: Sequence[int] = (),
    vanilla_logits: bool = False,
    shard: Shard | None = None,
) -> tuple[np.ndarray, dict[int | str, np.ndarray]]:
    """Probe features [n, d] in sample order, plus last-token states of ``capture_layers`` and, with
    ``vanilla_logits``, the plain forward's next-token logits under the key ``"logits_vanilla"``
    (from the same prefill, so a projected and an unprojected probe cost one pass). Under a launcher
    (:mod:`sasa.distributed`) each process extracts its batches and every process gets them all."""
    shard = shard or current_shard()
    samples = list(samples)
    mine = shard.batch_indices(len(samples), batch_size)
    keys: list[int | str] = list(capture_layers) + (["logits_vanilla"] if vanilla_logits else [])
    done: dict[int, tuple[np.ndarray, dict[int | str, np.ndarray]]] = {}
    bar = tqdm(total=sum(map(len, mine)), desc="features", unit="prompt", disable=not progress or not shard.is_main)
    for idx in mine:
        chunk = [samples[i] for i in idx]
        inputs = encode_samples(engine, chunk)
        result = engine.prefill(inputs, capture_layers=capture_layers, vanilla_logits=vanilla_logits)
        extra = {k: result.captured[k].numpy() for k in capture_layers}
        if vanilla_logits:
            extra["logits_vanilla"] = result.logits_vanilla.numpy()
        done[idx[0]] = (result.features.numpy(), extra)
        bar.update(len(chunk))
    bar.close()
    if shard.parallel:  # every shard gets every batch, put back in sample order
        done = {k: v for part in shard.gather(done) for k, v in part.items()}
    if not done:
        raise ValueError("no samples to extract features from")
    order = sorted(done)
    feats = [done[k][0] for k in order]
    captured = {key: [done[k][1][key] for k in order] for key in keys}
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in captured.items()}
