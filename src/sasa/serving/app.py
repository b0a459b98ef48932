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
import copy
import ctypes
import dataclasses
import html
import json
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sasa.guard.generation import Guard
from sasa.serving.batching import Batcher, Job, QueueFull
from sasa.serving.prometheus import ServerMetrics
from sasa.serving.protocol import ChatRequest, Limits, RequestError, json_depth_ok, parse_chat_request

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
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without an API key, beyond the bound address


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ADMISSION_COPIES = 4  # requests tokenized for their context check at once


class SecurityHeaders:
    """ASGI middleware: the headers above on every response, streamed ones and errors included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


class CancelOnExit(StreamingResponse):
    """A streamed answer whose job is cancelled however the response ends: finished, failed, or its
    client gone before the first byte (when the body generator never starts, so its own
    ``finally`` never runs)."""

    def __init__(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job = job

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled.set()


def _host_name(host_header: str) -> tuple[str, int | None]:
    """(name, port) of a ``Host`` header: ``example.com:80``, ``[::1]:8000``, ``127.0.0.1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name, int(port) if port.isdigit() else None


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
        self.limits = config.limits
        if self.limits.max_prompt_chars is None and self.context is not None:
            # no prompt of more characters can fit: every token spells at most the longest token
            self.limits = dataclasses.replace(self.limits, max_prompt_chars=self.context * _longest_token(adapter))
        # admission encodes with its own copies of the processor (a few, lent out one request at a
        # time, so memory stays bounded), never with the decoding worker's: it never waits on decoding
        self._template = copy.deepcopy(adapter.processor)
        self._spare: queue.LifoQueue = queue.LifoQueue()
        self._copies = threading.BoundedSemaphore(ADMISSION_COPIES)
        self.detector_note = detector_note(guard)
        if self.detector_note:
            logger.warning("%s", self.detector_note)

    # --- request handling ----------------------------------------------------------------------
    def _check_origin(self, request: Request) -> None:
        """Without an API key, only a ``Host`` naming this server is served, so that a web page that
        rebinds its own domain name to this machine's address cannot read the answers."""
        if self.config.api_key is not None:
            return
        name, port = _host_name(request.headers.get("host", ""))
        bound = request.scope.get("server") or (None, None)
        allowed = {*LOOPBACK_NAMES, *(h.lower() for h in self.config.allowed_hosts)}
        if bound[0]:
            allowed.add(str(bound[0]).lower())
        if "*" in self.config.allowed_hosts or (name in allowed and (port is None or bound[1] is None
                                                                     or port == bound[1])):
            return
        raise RequestError(403, f"the Host header {request.headers.get('host', '')!r} does not name this server; "
                                "start it with --allowed-hosts NAME to serve that name, or with --api-key",
                           code="host_not_allowed", kind="permission_error")

    def _check_key(self, request: Request) -> None:
        self._check_origin(request)
        if self.config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(given.encode(), self.config.api_key.encode()):
            raise RequestError(401, "a valid API key is required (Authorization: Bearer KEY)", code="invalid_api_key",
                               kind="authentication_error")

    async def _body(self, request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            # a cross-site form cannot send application/json without the browser asking first
            raise RequestError(415, f"the request body must be sent as application/json, not {kind or 'nothing'!r}",
                               code="unsupported_media_type")
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
        return await run_in_threadpool(self._decode, b"".join(chunks))

    def _decode(self, raw: bytes) -> Any:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"the request body is not valid JSON ({exc})") from None
        except RecursionError:
            body = None  # nested past Python's own limit
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise RequestError(400, f"the request body holds a value that cannot be read ({exc})") from None
        depth = self.limits.max_json_depth
        if body is None or not json_depth_ok(body, depth):
            raise RequestError(400, f"the request body nests deeper than {depth} levels")
        return body

    @contextmanager
    def _admission_adapter(self) -> Iterator[Any]:
        """An adapter over one of admission's processor copies, for one request: tokenizing and image
        processing for the context check run beside decoding, never under the worker's lock."""
        self._copies.acquire()
        try:
            try:
                adapter = self._spare.get_nowait()
            except queue.Empty:
                adapter = dataclasses.replace(self.guard.adapter, processor=copy.deepcopy(self._template))
            try:
                yield adapter
            finally:
                self._spare.put(adapter)
        finally:
            self._copies.release()

    def _admit(self, req: ChatRequest) -> tuple[int, int]:
        """The prompt's token count and the row's token budget, or the reason it cannot run."""
        try:
            with self._admission_adapter() as adapter:
                inputs = adapter.build_inputs([req.prompt], [req.image] if req.image is not None else None,
                                              system_prompt=req.system)
        except Exception as exc:  # noqa: BLE001 - the processor's own words name the problem
            raise RequestError(400, f"the request cannot be encoded for this model: {exc}", "messages") from None
        n = int(inputs["input_ids"].shape[1])
        limit = self.limits.max_tokens
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

    def _queue_full(self) -> RequestError:
        return RequestError(429, f"the server's queue is full ({self.config.max_queue} requests waiting); retry "
                                 "later", code="queue_full", kind="rate_limit_error")

    async def chat(self, request: Request) -> Response:
        try:
            return await self._chat(request)
        finally:
            if int(request.headers.get("content-length") or 0) > BIG_BODY:
                await run_in_threadpool(release_freed_memory)

    async def _chat(self, request: Request) -> Response:
        start = time.perf_counter()
        try:
            self._check_key(request)
            if self.batcher.depth >= self.config.max_queue:  # before any work on the request
                raise self._queue_full()
            body = await self._body(request)
            req = await run_in_threadpool(parse_chat_request, body, self.limits,
                                          self.guard.adapter.spec.takes_images)
            if req.model is not None and req.model != self.config.model_name:
                raise RequestError(404, f"the model {req.model!r} is not served here (this server serves "
                                        f"{self.config.model_name!r})", "model", "model_not_found")
            prompt_tokens, max_tokens = await run_in_threadpool(self._admit, req)
            job = Job(req, prompt_tokens, max_tokens, asyncio.get_running_loop())
            try:
                self.batcher.submit(job)
            except QueueFull:
                raise self._queue_full() from None
        except RequestError as exc:
            self.metrics.requests.labels(str(exc.status), "none").inc()
            return _error(exc)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return CancelOnExit(job, self._stream(job, ident, start), media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache"})
        try:
            return await self._complete(job, ident, start, request)
        finally:
            job.cancelled.set()  # done already, or abandoned: either way the worker may drop it

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

    async def _stream(self, job: Job, ident: str, start: float) -> AsyncIterator[str]:
        deadline = job.enqueued + self.config.timeout_s
        created = int(time.time())
        include_usage = job.request.include_usage
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
                {"id": self.config.model_name, "object": "model", "created": self.created, "owned_by": "sasa",
                 "sasa": {"mode": self.guard.mode, "threshold": self.threshold,
                          "detector_warning": self.detector_note}}]})

        @app.get("/health")
        async def health(request: Request) -> JSONResponse:
            self._check_origin(request)
            return JSONResponse({"status": "ok", "mode": self.guard.mode, "queue_depth": self.batcher.depth})

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            self._check_key(request)
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        @app.get("/")
        async def playground(request: Request) -> HTMLResponse:
            self._check_origin(request)
            return HTMLResponse(self.playground_page())

        app.add_middleware(SecurityHeaders)
        return app

    def playground_page(self) -> str:
        """The playground with this server's names filled in, each escaped for HTML (the script reads
        them from the page's attributes, never from code written into it)."""
        page = resources.files("sasa").joinpath("resources/playground.html").read_text(encoding="utf-8")
        warning = f'<p class="warning">{html.escape(self.detector_note)}</p>' if self.detector_note else ""
        return (page.replace("{{MODEL}}", html.escape(self.config.model_name, quote=True))
                .replace("{{MODE}}", html.escape(self.guard.mode, quote=True))
                .replace("{{WARNING}}", warning))


def _longest_token(adapter: Any) -> int:
    """Characters in the tokenizer's longest token (the most one token can stand for)."""
    tok = adapter.tokenizer
    try:
        return max(8, max(len(t) for t in tok.convert_ids_to_tokens(list(range(len(tok)))) if isinstance(t, str)))
    except (TypeError, ValueError):
        return 64


def detector_note(guard: Guard) -> str | None:
    """Words for a detector fitted on text alone in front of a model that takes images (its scores
    on images are outside what it was calibrated on), or None."""
    probe = guard.probe
    if probe is None or not guard.adapter.spec.takes_images:
        return None
    with_images = (probe.metadata.get("data") or {}).get("n_with_image")
    if with_images == 0:
        return ("the detector was fitted on text prompts only, but this model takes images: its scores and "
                "threshold on image prompts are uncalibrated (refit it with image samples)")
    return None


BIG_BODY = 1 << 20  # bytes: a request body past this is worth handing its memory back after


def release_freed_memory() -> None:
    """Hand memory freed after a large request back to the system.  glibc's allocator raises its
    mmap threshold after the first large free, so later large bodies come from heap arenas that it
    keeps: without this, a few near-limit requests leave the process hundreds of MB larger."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


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
