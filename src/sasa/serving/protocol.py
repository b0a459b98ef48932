"""OpenAI Chat Completions requests in, checked requests out; errors in OpenAI's error shape.

A request is read by hand from its JSON (not by a schema library) so that every refusal names the
offending field (``messages[1].content[0].image_url``) and the problem in words, as OpenAI's own
``invalid_request_error`` does. What sasa serves: an optional system message and one user message
(text parts and at most one image as a ``data:`` URL), greedy or sampled decoding, ``n`` = 1.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may carry (bytes of the body, of one decoded image, pixels of one image)."""

    max_body_bytes: int = 20 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_tokens: int = 256
    max_prompt_chars: int | None = None  # None: the server derives it from the model's context
    max_json_depth: int = 32
    allow_remote_images: bool = False
    remote_timeout_s: float = 10.0


@dataclass
class ChatRequest:
    """One checked request: what the guard needs (prompt, image, system) and how to decode."""

    prompt: str
    image: Image.Image | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    model: str | None = None
    include_usage: bool = False

    @property
    def sampled(self) -> bool:
        return self.temperature > 0.0

    def generation_key(self) -> tuple:
        """Requests with equal keys can share a batch: greedy ones always; sampled ones with the same
        temperature and top_p; a seeded one only with itself (a seed must give the same answer
        whatever else arrives with it)."""
        if not self.sampled:
            return ("greedy",)
        if self.seed is not None:
            return ("seeded", id(self))
        return ("sample", self.temperature, self.top_p)


# OpenAI fields that would change what an answer means; sasa cannot honour them, so it says so
# rather than answer as if it had (a value equal to the field's default is accepted).
UNSUPPORTED = {
    "tools": "tool calls are not served", "functions": "function calls are not served",
    "tool_choice": "tool calls are not served", "function_call": "function calls are not served",
    "response_format": "structured output is not served (only {\"type\": \"text\"})",
    "logprobs": "log-probabilities are not returned", "top_logprobs": "log-probabilities are not returned",
    "logit_bias": "logit_bias is not applied", "frequency_penalty": "frequency_penalty is not applied",
    "presence_penalty": "presence_penalty is not applied", "audio": "audio output is not served",
    "modalities": "only text output is served", "prediction": "predicted outputs are not served",
}
_HARMLESS = {"tools": ([],), "functions": ([],), "tool_choice": ("none",), "function_call": ("none",),
             "response_format": ({"type": "text"},), "logprobs": (False,), "logit_bias": ({},),
             "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "modalities": (["text"],)}
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)  # what torch.manual_seed takes


def _unsupported(body: dict) -> None:
    for name, why in UNSUPPORTED.items():
        value = body.get(name)
        if value is None or any(value == ok and type(value) is type(ok) for ok in _HARMLESS.get(name, ())):
            continue
        raise RequestError(400, f"'{name}' is not supported by this server: {why}", name, "unsupported_parameter")


def json_depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` arrays/objects deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"'{name}' must be a number, got {value!r}", name)
    if isinstance(value, int) and not lo <= value <= hi:  # before float(): a huge int does not fit one
        raise RequestError(400, f"'{name}' must be between {lo} and {hi}", name)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RequestError(400, f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return float(value)


def _integer(body: dict, name: str, lo: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{name}' must be an integer, got {value!r}", name)
    if value < lo:
        raise RequestError(400, f"'{name}' must be at least {lo}, got {value}", name)
    return value


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(exc: Exception) -> str:
    """An image library's error in words a client can use (no ``<_io.BytesIO object at 0x…>``)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a known image format (send PNG, JPEG, GIF, WebP or BMP)"
    return _OBJECT_REPR.sub("the image", str(exc)) or type(exc).__name__


def decode_image(url: str, where: str, limits: Limits) -> Image.Image:
    """A PIL image from a ``data:`` URL (or, only when allowed, an http(s) URL), within the limits."""
    if url.startswith(("http://", "https://")):
        if not limits.allow_remote_images:
            raise RequestError(400, f"{where}: remote image URLs are not fetched by this server (start it with "
                                    "--allow-remote-images); send the image as a data: URL", where,
                               "remote_image_refused")
        try:
            with urllib.request.urlopen(url, timeout=limits.remote_timeout_s) as resp:  # opt-in: --allow-remote-images
                raw = resp.read(limits.max_image_bytes + 1)
        except OSError as exc:
            raise RequestError(400, f"{where}: could not fetch the image ({exc})", where) from None
    elif url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or ";base64" not in header:
            raise RequestError(400, f"{where}: a data URL must be base64 encoded (data:image/png;base64,...)", where)
        if len(payload) > limits.max_image_bytes * 4 // 3 + 4:
            raise RequestError(413, f"{where}: the image is larger than {limits.max_image_bytes} bytes", where,
                               "image_too_large")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: the data URL is not valid base64", where) from None
    else:
        raise RequestError(400, f"{where}: the image URL must be a data: URL", where)
    if len(raw) > limits.max_image_bytes:
        raise RequestError(413, f"{where}: the image is larger than {limits.max_image_bytes} bytes", where,
                           "image_too_large")
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > limits.max_image_pixels:
            raise RequestError(413, f"{where}: the image has {img.width}x{img.height} pixels, more than "
                                    f"{limits.max_image_pixels}", where, "image_too_large")
        img.load()
        return img.convert("RGB")
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(400, f"{where}: the image data cannot be read as an image ({_reason(exc)})", where,
                           "invalid_image") from None


def _content(content: Any, where: str, limits: Limits, images_ok: bool,
             role: str = "user") -> tuple[str, list[Image.Image]]:
    """The text and images of one message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(400, f"{where} must be a string or a list of content parts", where)
    texts, images = [], []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RequestError(400, f"{at} must be an object with a 'type'", at)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(400, f"{at}.text must be a string", f"{at}.text")
            texts.append(part["text"])
        elif kind == "image_url":
            if not images_ok:
                raise RequestError(400, f"{at}: this model is text-only and takes no images", at,
                                   "images_unsupported")
            if role != "user":
                raise RequestError(400, f"{at}: images are taken in the user message only, not in a {role} "
                                        "message", at, "image_not_in_user_message")
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            if not isinstance(url, str):
                raise RequestError(400, f"{at}.image_url must be an object with a 'url' string", f"{at}.image_url")
            images.append(decode_image(url, f"{at}.image_url", limits))
        else:
            raise RequestError(400, f"{at}: unsupported content part type {kind!r} (supported: text, image_url)",
                               f"{at}.type", "unsupported_content_part")
    return "\n".join(texts), images


def _text_chars(messages: list) -> int:
    """Characters of text in the messages, whatever their shape (shape errors are found later)."""
    total = 0
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return total


def parse_chat_request(body: Any, limits: Limits, images_ok: bool) -> ChatRequest:
    """Check a decoded JSON body; raises :class:`RequestError` naming the first problem."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of messages", "messages")
    _unsupported(body)
    chars = _text_chars(messages)  # before any image is decoded or any text tokenized
    if limits.max_prompt_chars is not None and chars > limits.max_prompt_chars:
        raise RequestError(400, f"the messages hold {chars} characters of text, more than this model's context can "
                                f"take ({limits.max_prompt_chars})", "messages", "context_length_exceeded")
    system, user, image = None, None, None
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or "role" not in msg:
            raise RequestError(400, f"{where} must be an object with a 'role' and 'content'", where)
        role = msg["role"]
        if role not in ("system", "developer", "user"):
            raise RequestError(400, f"{where}: role {role!r} is not served; sasa serves one optional system "
                                    "message and one user message (no assistant turns or tools)", f"{where}.role")
        text, images = _content(msg.get("content"), f"{where}.content", limits, images_ok, role)
        if role in ("system", "developer"):
            if system is not None or user is not None:
                raise RequestError(400, f"{where}: the system message must come first, and only once", where)
            system = text
            continue
        if user is not None:
            raise RequestError(400, f"{where}: only one user message is served (multi-turn conversations are "
                                    "not)", where)
        if len(images) > 1:
            raise RequestError(400, f"{where}: at most one image per request, got {len(images)}", f"{where}.content")
        if not text.strip():
            raise RequestError(400, f"{where}: the user message has no text", f"{where}.content")
        user, image = text, (images[0] if images else None)
    if user is None:
        raise RequestError(400, "'messages' has no user message", "messages")
    n = _integer(body, "n", 1)
    if n not in (None, 1):
        raise RequestError(400, f"'n' must be 1, got {n}", "n")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise RequestError(400, f"'max_tokens' may be at most {limits.max_tokens} on this server, got {max_tokens}",
                           "max_tokens")
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = list(stop)
    else:
        raise RequestError(400, "'stop' must be a string or a list of at most 4 strings", "stop")
    if any(not s for s in stops):
        raise RequestError(400, "'stop' strings must not be empty", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, f"'seed' must be an integer, got {seed!r}", "seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise RequestError(400, f"'seed' must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise RequestError(400, "'stream_options' must be an object", "stream_options")
        if not isinstance(options.get("include_usage", False), bool):
            raise RequestError(400, "'stream_options.include_usage' must be true or false",
                               "stream_options.include_usage")
        if not stream:
            raise RequestError(400, "'stream_options' is only allowed with 'stream': true", "stream_options")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(400, "'model' must be a string", "model")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0.0:
        raise RequestError(400, "'top_p' must be above 0", "top_p")
    return ChatRequest(prompt=user, image=image, system=system, max_tokens=max_tokens,
                       temperature=_number(body, "temperature", 0.0, 0.0, 2.0), top_p=top_p, stop=stops,
                       seed=seed, stream=stream, model=model,
                       include_usage=bool((options or {}).get("include_usage", False)))
