"""One forward per sample: the last-prompt-token state of every decoder block, cached on disk.

Every per-layer metric of ``sasa analyze`` except head ablation is computed from these states, so
the model runs once per sample however many metrics are asked for, and a long analysis that is
stopped (killed, out of memory, a bad image) resumes where it stopped.

The cache is a folder:

* ``index.json`` - format, the model fingerprint with a digest of its weights (a folder made by
  other weights of the same architecture is refused, not served), and per sample id: its shard, its row and a key
  (SHA-256 of the prompt and the image file's bytes) so an edited sample is recomputed rather
  than silently served stale;
* ``shard-NNNNN.safetensors`` - one batch each: ``states`` ``[b, L, d]`` float32 and ``lengths``
  ``[b]`` (prompt tokens). ``states[:, i]`` is the output of decoder block ``i`` in the plain
  forward (no projection): ``hidden_states[i + 1]`` of a Hugging Face forward, except for the
  last block, where Hugging Face reports the state *after* the final norm and the cache keeps the
  block's own output (the logit lens applies the norm itself).

Writes are atomic and ordered: a shard is written to a temporary file and renamed, then the index
is rewritten the same way. A crash leaves at worst a shard the index does not name; it is removed
on the next open. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sasa.data.sample import Sample
from sasa.distributed import current_shard
from sasa.engine import SASAEngine, plain_engine
from sasa.engine.samples import batches, encode_samples
from sasa.models.adapters import Adapter
from sasa.store.atomic import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "sasa-activations"
FORMAT_VERSION = 1
_SHARD = re.compile(r"^shard-(\d{5,})\.safetensors$")


class ActivationCacheError(ValueError):
    """A cache folder that belongs to another model or is damaged; the message names the folder."""


def sample_key(sample: Sample) -> str:
    """What the cached state depends on: the prompt and the image's bytes (not its path or mtime)."""
    h = hashlib.sha256(sample.prompt.encode("utf-8"))
    h.update(b"\x00")
    if sample.image is not None:
        try:
            h.update(Path(sample.image).read_bytes())
        except OSError as exc:
            raise ActivationCacheError(f"sample {sample.id!r}: cannot read image {sample.image}: {exc}") from None
    return h.hexdigest()


def last_token_states(engine: SASAEngine, samples: Sequence[Sample],
                      layers: Sequence[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """``[b, len(layers), d]`` last-prompt-token block outputs for one batch, and prompt lengths."""
    L = engine.adapter.num_layers
    layers = list(range(L)) if layers is None else list(layers)
    result = engine.prefill(encode_samples(engine, samples), capture_layers=layers)
    return torch.stack([result.captured[k] for k in layers], dim=1), [int(x) for x in result.prompt_lengths]


class ActivationCache:
    """The on-disk store of per-sample, per-block last-token states for one model (module doc)."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict, model_name: str | None = None) -> None:
        self.dir = Path(directory)
        self.fingerprint = dict(fingerprint)
        self.model_name = model_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "index.json"
        self.index = self._open()

    # --- index ----------------------------------------------------------------------------------
    def _open(self) -> dict:
        fresh = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model_name,
                 "fingerprint": self.fingerprint, "num_layers": self.fingerprint.get("num_layers"),
                 "what": "last prompt token, output of every decoder block (0-based; before the final norm), "
                         "plain forward, float32",
                 "samples": {}}
        if self.index_path.is_file():
            try:
                index = json.loads(self.index_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ActivationCacheError(f"{self.index_path}: not valid JSON ({exc}); delete the folder to "
                                           "recompute") from None
            if not isinstance(index, dict) or index.get("format") != FORMAT or \
                    index.get("format_version") != FORMAT_VERSION:
                raise ActivationCacheError(f"{self.index_path}: not a {FORMAT} v{FORMAT_VERSION} index")
            made_for = index.get("fingerprint") or {}
            fp = self.fingerprint
            diffs = [f"{k}: cache {made_for.get(k)!r} vs model {fp.get(k)!r}"
                     for k in sorted(set(made_for) | set(fp)) if made_for.get(k) != fp.get(k)]
            if diffs:
                raise ActivationCacheError(f"activation cache {self.dir} was made for another model "
                                           f"({index.get('model')}): " + "; ".join(diffs) +
                                           ". Use another --out folder or delete it.")
        else:
            index = fresh
        named = {e["shard"] for e in index["samples"].values()}
        for name in sorted(named):
            if not (self.dir / name).is_file():
                logger.warning("%s: shard %s is missing; its samples will be recomputed", self.dir, name)
                index["samples"] = {k: e for k, e in index["samples"].items() if e["shard"] != name}
        for p in self.dir.iterdir():
            if (p.suffix == ".tmp") or (_SHARD.match(p.name) and p.name not in named):
                logger.info("%s: removing %s left by an interrupted run", self.dir, p.name)
                p.unlink()
        return index

    def _next_shard(self) -> str:
        nums = [int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD.match(p.name))]
        return f"shard-{(max(nums) + 1) if nums else 0:05d}.safetensors"

    def absorb_parts(self) -> None:
        """Move every process's ``part-R`` cache (a data-parallel run's) into this one, then remove it.
        A part's shard is moved before the index names it here, so an interruption only recomputes."""
        for part in sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("part-")):
            sub = ActivationCache(part, self.fingerprint, self.model_name)
            for old in sorted({e["shard"] for e in sub.index["samples"].values()}):
                name = self._next_shard()
                os.replace(part / old, self.dir / name)
                for sid, e in sub.index["samples"].items():
                    if e["shard"] == old:
                        self.index["samples"][sid] = {**e, "shard": name}
                atomic_write_json(self.index_path, self.index)
            for leftover in part.iterdir():
                leftover.unlink()
            part.rmdir()

    # --- public ---------------------------------------------------------------------------------
    def missing(self, samples: Sequence[Sample]) -> list[Sample]:
        """Samples with no cached state, or whose prompt or image changed since it was cached."""
        out = []
        for s in samples:
            entry = self.index["samples"].get(s.id)
            if entry is None or entry.get("key") != sample_key(s):
                out.append(s)
        return out

    def add(self, samples: Sequence[Sample], states: torch.Tensor, lengths: Sequence[int]) -> None:
        """Write one batch as a new shard, then record it in the index (both atomically)."""
        from safetensors.torch import save_file

        if states.ndim != 3 or states.shape[0] != len(samples):
            raise ValueError(f"states must be [{len(samples)}, L, d], got {tuple(states.shape)}")
        name = self._next_shard()
        with atomic_path(self.dir / name) as tmp:
            save_file({"states": states.to(torch.float32).contiguous(),
                       "lengths": torch.tensor(list(lengths), dtype=torch.int64)}, str(tmp),
                      metadata={"format": FORMAT, "ids": json.dumps([s.id for s in samples])})
        for row, s in enumerate(samples):
            self.index["samples"][s.id] = {"shard": name, "row": row, "key": sample_key(s)}
        atomic_write_json(self.index_path, self.index)

    def load(self, samples: Sequence[Sample]) -> np.ndarray:
        """``[n, L, d]`` float32 in the order of ``samples``; every sample must be cached."""
        from safetensors import safe_open

        entries = []
        for s in samples:
            e = self.index["samples"].get(s.id)
            if e is None:
                raise ActivationCacheError(f"sample {s.id!r} is not in the activation cache {self.dir}")
            entries.append(e)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i, e in enumerate(entries):
            by_shard.setdefault(e["shard"], []).append((i, e["row"]))
        out: np.ndarray | None = None
        for name, rows in by_shard.items():
            try:
                with safe_open(str(self.dir / name), framework="pt") as fh:
                    block = fh.get_tensor("states").numpy()
            except Exception as exc:  # safetensors raises its own types for damaged files
                raise ActivationCacheError(f"{self.dir / name}: cannot read ({exc}); delete it to recompute "
                                           "its samples") from None
            if out is None:
                out = np.empty((len(samples), *block.shape[1:]), dtype=np.float32)
            for i, r in rows:
                out[i] = block[r]
        if out is None:
            raise ValueError("no samples to load")
        return out


def collect_activations(
    adapter: Adapter,
    samples: Sequence[Sample],
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    model_name: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """``[n, L, d]`` last-token states of every block for ``samples``, computing only what is not cached.

    One plain forward per sample (batched, left padded), stopped after the last block; each batch
    is on disk before the next starts, so an interrupted call loses at most one batch. Under a
    launcher (:mod:`sasa.distributed`) each process computes its batches into ``part-R`` of the
    cache, which the main process then absorbs; a killed process's part resumes on rerun.
    """
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate sample ids: {dup[:5]}")
    shard = current_shard()
    made_by = {**adapter.fingerprint(), "weights": adapter.weights_digest()}
    if not shard.is_main:  # the main process opens (and tidies) the cache first
        shard.barrier()
    cache = ActivationCache(cache_dir, made_by, model_name)
    if shard.is_main:
        shard.barrier()
    todo = cache.missing(samples)
    if todo:
        logger.info("activations: %d of %d samples to compute (%d cached)", len(todo), len(samples),
                    len(samples) - len(todo))
        engine = plain_engine(adapter)
        target = cache
        if shard.parallel:  # this process's batches of the one-process run, into its own part
            target = ActivationCache(Path(cache_dir) / f"part-{shard.rank}", made_by, model_name)
            todo = target.missing(shard.items(todo, batch_size))
        bar = tqdm(total=len(todo), desc="activations", unit="prompt", disable=not progress or not shard.is_main)
        for chunk in batches(todo, batch_size):
            states, lengths = last_token_states(engine, chunk)
            target.add(chunk, states, lengths)
            bar.update(len(chunk))
        bar.close()
    else:
        logger.info("activations: all %d samples cached in %s", len(samples), cache.dir)
    if shard.parallel:
        shard.barrier()
        if shard.is_main:
            cache.absorb_parts()
        shard.barrier()
        cache = ActivationCache(cache_dir, made_by, model_name)
    return cache.load(samples)
