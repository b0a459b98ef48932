"""Guarded serving: an OpenAI-compatible endpoint with SASA in front of the model (``sasa serve``).

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client)."""

from sasa.serving.app import BackgroundServer, GuardedServer, ServeConfig
from sasa.serving.protocol import ChatRequest, Limits, RequestError, parse_chat_request

__all__ = ["BackgroundServer", "ChatRequest", "GuardedServer", "Limits", "RequestError", "ServeConfig",
           "parse_chat_request"]
