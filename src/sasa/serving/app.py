"""The OpenAI-compatible guarded server: FastAPI routes over a :class:`~sasa.serving.batching.Batcher`.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events), ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus text) and the playground page at ``/``. Every error
is a JSON body in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``). Every
answer carries the guard's view in ``sasa``: mode, score, threshold and decision.

Deviations from OpenAI, by design: ``temperature`` defaults to 0 (greedy, as the library's guard
decodes, so an answer is reproducible) rather than 1; one optional system message and one user
message are served (no assistant turns, tools or ``n`` > 1); the playground page ``/`` (static, no
data) is served without the API key, which it asks for and sends with its own requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sasa.guard import Guard
from sasa.serving.batching import Batcher, Job, QueueFull
from sasa.serving.metrics import ServerMetrics
from sasa.serving.protocol import ChatRequest, Limits, RequestError, parse_chat_request

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """How the server batches, queues, times out and checks requests."""

    model_name: str = "sasa"
    api_key: str | None = None
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    timeout_s: float = 300.0
    limits: Limits = field(default_factory=Limits)


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


class GuardedServer:
    """Holds the guard, the batcher and the metrics; :meth:`app` builds the FastAPI application."""

    def __init__(self, guard: Guard, config: ServeConfig | None = None) -> None:
        config = config or ServeConfig()
        self.guard = guard
        self.config = config
        self.batcher = Batcher(guard, config.max_batch_size, config.max_wait_ms / 1000.0, config.max_queue)
        self.metrics = ServerMetrics(lambda: self.batcher.depth)
        self.batcher.on_batch = self.metrics.batch.observe
        self.batcher.on_cancel = self.metrics.cancelled.inc
        self.created = int(time.time())
        adapter = guard.adapter
        self.context = getattr(adapter.text_config, "max_position_embeddings", None)
        self.threshold = float(guard.probe.threshold) if guard.probe is not None else None

    # --- request handling ----------------------------------------------------------------------
    def _check_key(self, request: Request) -> None:
        if self.config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(given.encode(), self.config.api_key.encode()):
            raise RequestError(401, "a valid API key is required (Authorization: Bearer KEY)", code="invalid_api_key",
                               kind="authentication_error")

    async def _body(self, request: Request) -> Any:
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"the request body is not valid JSON ({exc})") from None

    def _admit(self, req: ChatRequest) -> tuple[int, int]:
        """The prompt's token count and the row's token budget, or the reason it cannot run."""
        adapter = self.guard.adapter
        try:
            with self.batcher.tokenizer_lock:
                inputs = adapter.build_inputs([req.prompt], [req.image] if req.image is not None else None,
                                              system_prompt=req.system)
        except Exception as exc:  # noqa: BLE001 - the processor's own words name the problem
            raise RequestError(400, f"the request cannot be encoded for this model: {exc}", "messages") from None
        n = int(inputs["input_ids"].shape[1])
        limit = self.config.limits.max_tokens
        if self.context is not None:
            room = self.context - n
            if req.max_tokens is not None and req.max_tokens > room or room < 1:
                raise RequestError(400, f"this model's context is {self.context} tokens; the prompt has {n} and "
                                        f"max_tokens asks for {req.max_tokens or 1} more", "messages",
                                   "context_length_exceeded")
            limit = min(limit, room)
        return n, req.max_tokens or limit

    def _sasa(self, score: float | None, refused: bool) -> dict[str, Any]:
        return {"mode": self.guard.mode, "score": score, "threshold": self.threshold,
                "decision": "refuse" if refused else "answer"}

    async def chat(self, request: Request) -> Response:
        start = time.perf_counter()
        try:
            self._check_key(request)
            body = await self._body(request)
            req = await run_in_threadpool(parse_chat_request, body, self.config.limits,
                                          self.guard.adapter.spec.takes_images)
            if req.model is not None and req.model != self.config.model_name:
                raise RequestError(404, f"the model {req.model!r} is not served here (this server serves "
                                        f"{self.config.model_name!r})", "model", "model_not_found")
            prompt_tokens, max_tokens = await run_in_threadpool(self._admit, req)
            job = Job(req, prompt_tokens, max_tokens, asyncio.get_running_loop())
            try:
                self.batcher.submit(job)
            except QueueFull:
                raise RequestError(429, f"the server's queue is full ({self.config.max_queue} requests waiting); "
                                        "retry later", code="queue_full", kind="rate_limit_error") from None
        except RequestError as exc:
            self.metrics.requests.labels(str(exc.status), "none").inc()
            return _error(exc)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(self._stream(job, ident, start, body), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await self._complete(job, ident, start, request)

    async def _next(self, job: Job, deadline: float, request: Request | None = None) -> tuple[str, dict]:
        """The job's next event; cancels the job when its time is up or (non-streamed) its client left."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                job.cancelled.set()
                raise RequestError(504, f"the request did not finish within {self.config.timeout_s:g} s",
                                   code="timeout", kind="timeout_error")
            try:
                return await asyncio.wait_for(job.events.get(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    job.cancelled.set()
                    raise RequestError(499, "the client closed the connection", code="client_closed")

    def _record(self, status: int, score: float | None, refused: bool, start: float) -> None:
        self.metrics.requests.labels(str(status), "refuse" if refused else "answer").inc()
        if refused:
            self.metrics.refusals.inc()
        if score is not None:
            self.metrics.scores.observe(score)
        self.metrics.latency.observe(time.perf_counter() - start)

    async def _complete(self, job: Job, ident: str, start: float, request: Request) -> Response:
        deadline = job.enqueued + self.config.timeout_s
        score, refused = None, False
        try:
            while True:
                kind, data = await self._next(job, deadline, request)
                if kind == "decision":
                    score, refused = data["score"], data["refused"]
                elif kind == "error":
                    raise data["error"]
                elif kind == "done":
                    break
        except RequestError as exc:
            self.metrics.requests.labels(str(exc.status), "none").inc()
            return _error(exc)
        self._record(200, score, refused, start)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": self.config.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": data["text"]},
                         "finish_reason": data["finish_reason"], "logprobs": None}],
            "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": data["completion_tokens"],
                      "total_tokens": job.prompt_tokens + data["completion_tokens"]},
            "sasa": self._sasa(score, refused),
        })

    async def _stream(self, job: Job, ident: str, start: float, body: dict) -> AsyncIterator[str]:
        deadline = job.enqueued + self.config.timeout_s
        created = int(time.time())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sasa: dict[str, Any] = self._sasa(None, False)

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": self.config.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                       "sasa": sasa, **extra}
            return f"data: {json.dumps(payload)}\n\n"

        score, refused = None, False
        try:
            while True:
                kind, data = await self._next(job, deadline)
                if kind == "decision":
                    score, refused = data["score"], data["refused"]
                    sasa = self._sasa(score, refused)
                    yield chunk({"role": "assistant", "content": ""})
                elif kind == "delta":
                    yield chunk({"content": data["text"]})
                elif kind == "error":
                    raise data["error"]
                elif kind == "done":
                    if refused:
                        yield chunk({"content": data["text"]})
                    yield chunk({}, data["finish_reason"])
                    if include_usage:
                        usage = {"prompt_tokens": job.prompt_tokens, "completion_tokens": data["completion_tokens"],
                                 "total_tokens": job.prompt_tokens + data["completion_tokens"]}
                        payload = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                   "model": self.config.model_name, "choices": [], "usage": usage, "sasa": sasa}
                        yield f"data: {json.dumps(payload)}\n\n"
                    yield "data: [DONE]\n\n"
                    self._record(200, score, refused, start)
                    return
        except RequestError as exc:
            self.metrics.requests.labels(str(exc.status), "none").inc()
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            job.cancelled.set()  # a client that left mid-stream frees its row at the next token

    # --- the application -----------------------------------------------------------------------
    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI):
            self.batcher.start()
            yield
            self.batcher.stop()

        app = FastAPI(title="sasa guarded server", lifespan=lifespan, docs_url=None, redoc_url=None,
                      openapi_url=None)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
            return _error(RequestError(exc.status_code, str(exc.detail)))

        @app.exception_handler(RequestError)
        async def request_error(_: Request, exc: RequestError) -> JSONResponse:
            return _error(exc)

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await self.chat(request)

        @app.get("/v1/models")
        async def models(request: Request) -> JSONResponse:
            self._check_key(request)
            return JSONResponse({"object": "list", "data": [
                {"id": self.config.model_name, "object": "model", "created": self.created, "owned_by": "sasa"}]})

        @app.get("/health")
        async def health() -> JSONResponse:
            return JSONResponse({"status": "ok", "mode": self.guard.mode, "queue_depth": self.batcher.depth})

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            self._check_key(request)
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        @app.get("/")
        async def playground() -> HTMLResponse:
            page = resources.files("sasa").joinpath("resources/playground.html").read_text(encoding="utf-8")
            return HTMLResponse(page.replace("{{MODEL}}", self.config.model_name)
                                .replace("{{MODE}}", self.guard.mode))

        return app


class BackgroundServer:
    """Runs an app under uvicorn in a thread (tests, benchmarks, notebooks): ``with ... as url``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
