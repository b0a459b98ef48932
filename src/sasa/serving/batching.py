"""Dynamic batching: one model, one worker thread, requests that arrive together decoded together.

The HTTP side (asyncio) puts a :class:`Job` in a bounded queue and reads its events; the worker
thread takes the oldest job, waits up to ``max_wait_s`` for up to ``max_batch_size - 1`` more with
the same decoding settings (:meth:`~sasa.serving.protocol.ChatRequest.generation_key`), and runs
them as one :meth:`sasa.guard.generation.Guard.generate_inputs` call. Each row stops on its own (its
``max_tokens``, ``stop`` strings, EOS, or its client gone) through :class:`RowTracker`, a stopping
criterion that also turns each row's new tokens into text deltas for streaming. A batch that
cannot be encoded together is rerun one job at a time, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers import StoppingCriteria

from sasa.guard.generation import Guard
from sasa.serving.protocol import ChatRequest, RequestError

logger = logging.getLogger(__name__)

_ids = itertools.count()


@dataclass
class Job:
    """One request on its way through the worker; events go back to the asyncio loop that made it."""

    request: ChatRequest
    prompt_tokens: int
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)
    number: int = field(default_factory=lambda: next(_ids))

    def emit(self, kind: str, **data: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class QueueFull(Exception):
    """The bounded queue holds ``max_queue`` jobs already."""


class RowTracker(StoppingCriteria):
    """Per row of a batch: the tokens it generated, when it stops and why, and its text so far."""

    def __init__(self, jobs: Sequence[Job], tokenizer: Any, eos_ids: set[int], lock: threading.Lock,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.jobs = list(jobs)
        self.on_cancel = on_cancel
        self.tokenizer = tokenizer
        self.lock = lock
        self.eos_ids = eos_ids
        n = len(self.jobs)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.sent = [""] * n
        self.refused = [False] * n

    def on_decision(self, scores: list[float | None], refused: list[bool]) -> None:
        for i, (job, score, r) in enumerate(zip(self.jobs, scores, refused)):
            self.refused[i] = r
            if r:
                self.finish[i] = "content_filter"
            job.emit("decision", score=score, refused=r)

    def text(self, i: int) -> tuple[str, bool]:
        """Row i's text, cut at its first stop string; and whether a stop string was found."""
        with self.lock:
            text = self.tokenizer.decode(self.ids[i], skip_special_tokens=True)
        cuts = [text.find(s) for s in self.jobs[i].request.stop if s in text]
        return (text[:min(cuts)], True) if cuts else (text, False)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for i, job in enumerate(self.jobs):
            if self.finish[i] is not None:
                continue
            if job.cancelled.is_set():
                self.finish[i] = "cancelled"
                if self.on_cancel is not None:
                    self.on_cancel()
                continue
            token = last[i]
            if token in self.eos_ids:
                self.finish[i] = "stop"
                continue
            self.ids[i].append(token)
            text, stopped = self.text(i)
            if stopped:
                self.finish[i] = "stop"
            elif len(self.ids[i]) >= job.max_tokens:
                self.finish[i] = "length"
            if job.request.stream:
                self.send(i, text, final=self.finish[i] is not None)
        return torch.tensor([f is not None for f in self.finish], dtype=torch.bool, device=input_ids.device)

    def send(self, i: int, text: str, final: bool) -> None:
        """Stream the part of ``text`` that can no longer change: up to its last whitespace, short of
        a possible start of a stop string or a half-decoded character (all of it when ``final``)."""
        if not final:
            keep = max(text.rfind(" "), text.rfind("\n")) + 1
            for s in self.jobs[i].request.stop:
                for k in range(len(s) - 1, 0, -1):
                    if text[:keep].endswith(s[:k]):
                        keep -= k
                        break
            text = text[:keep]
        if not text.startswith(self.sent[i]):
            if final:
                logger.warning("request %d: its streamed text is not a prefix of its answer", self.jobs[i].number)
            return
        if len(text) > len(self.sent[i]):
            self.jobs[i].emit("delta", text=text[len(self.sent[i]):])
            self.sent[i] = text


class Batcher:
    """The bounded queue and the worker thread that owns the model."""

    def __init__(self, guard: Guard, max_batch_size: int = 8, max_wait_s: float = 0.01, max_queue: int = 64,
                 on_batch: Callable[[int], None] | None = None, on_cancel: Callable[[], None] | None = None) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self.guard = guard
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_cancel = on_cancel
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer must not encode and decode at once
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="sasa-serve-worker", daemon=True)
        tok = guard.adapter.tokenizer
        eos = guard.adapter.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        if tok.eos_token_id is not None:
            self.eos_ids.add(tok.eos_token_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise QueueFull
            self._pending.append(job)
            self._cond.notify_all()

    # --- the worker thread ---------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._stopped:
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                if self._pending:
                    break
                self._cond.wait()
            if self._stopped:
                return None
            key = self._pending[0].request.generation_key()
            deadline = time.monotonic() + self.max_wait_s
            while True:
                fits = [j for j in self._pending if j.request.generation_key() == key and not j.cancelled.is_set()]
                left = deadline - time.monotonic()
                if len(fits) >= self.max_batch_size or left <= 0 or self._stopped:
                    break
                self._cond.wait(left)
            batch = fits[:self.max_batch_size]
            taken = {j.number for j in batch}
            self._pending = deque(j for j in self._pending if j.number not in taken and not j.cancelled.is_set())
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                self._run(batch)
            except RequestError as exc:
                for job in batch:
                    job.emit("error", error=exc)
            except Exception as exc:  # a failed batch is retried alone, then reported per job
                if len(batch) == 1:
                    logger.exception("request %d failed", batch[0].number)
                    batch[0].emit("error", error=RequestError(500, f"generation failed: {type(exc).__name__}: {exc}",
                                                              kind="server_error"))
                    continue
                logger.warning("a batch of %d failed (%s); running its jobs one at a time", len(batch), exc)
                for job in batch:
                    try:
                        self._run([job])
                    except Exception as one:
                        logger.exception("request %d failed", job.number)
                        job.emit("error", error=RequestError(500, f"generation failed: {type(one).__name__}: {one}",
                                                             kind="server_error"))

    def _run(self, batch: list[Job]) -> None:
        reqs = [j.request for j in batch]
        adapter = self.guard.adapter
        images = [r.image for r in reqs] if any(r.image is not None for r in reqs) else None
        with self.tokenizer_lock:
            inputs = adapter.encode([r.prompt for r in reqs], images, system_prompt=[r.system for r in reqs])
        tracker = RowTracker(batch, adapter.tokenizer, self.eos_ids, self.tokenizer_lock, self.on_cancel)
        first = reqs[0]
        kwargs: dict[str, Any] = {"do_sample": first.sampled}
        if first.sampled:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        self.guard.generate_inputs(inputs, max(j.max_tokens for j in batch), on_decision=tracker.on_decision,
                                   stopping_criteria=[tracker], **kwargs)
        for i, job in enumerate(batch):
            if tracker.refused[i]:
                job.emit("done", text=self.guard.refusal_message, finish_reason="content_filter", completion_tokens=0)
                continue
            text, _ = tracker.text(i)
            finish = tracker.finish[i] or "length"
            if job.request.stream:
                tracker.send(i, text, final=True)
            job.emit("done", text=text, finish_reason=finish, completion_tokens=len(tracker.ids[i]))
