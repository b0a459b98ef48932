"""Interception of the model's own prefill: the block tap and the signals that leave ``generate``.

The engine never re-implements a model's forward. It wraps each decoder block's ``forward`` for
one prefill (:class:`LayerTap`), recording the arguments the model passed (masks, position ids
-- M-RoPE included --, the cache) so pass 2 can re-run blocks with exactly those, and returning
blocks past the plan's last one untouched. Leaving ``generate`` early is done by raising
:class:`PrefillDone` (score only, or every row refused) or :class:`Handoff` (sasa's own decoder).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from sasa.models import compat


class PrefillDone(Exception):
    """Raised inside ``generate``'s prefill to stop without decoding; carries the prefill result."""

    def __init__(self, result: Any) -> None:
        super().__init__("prefill finished; no decoding requested")
        self.result = result


class Handoff(Exception):
    """Raised inside ``generate``'s prefill when sasa's projected decoder takes over."""

    def __init__(self, augmented_cache: Any, logits: torch.Tensor, outputs: Any, model_kwargs: dict) -> None:
        super().__init__("prefill finished; decoding continues with projection at every step")
        self.augmented_cache = augmented_cache
        self.logits = logits
        self.outputs = outputs
        self.model_kwargs = model_kwargs


class LayerTap:
    """Wraps decoder-block forwards for one forward pass.

    Records (args, kwargs) of blocks >= ``record_from``, keeps the outputs of ``keep`` blocks and
    returns its input unchanged from every block after ``last`` (which is then not computed).
    """

    def __init__(self, layers: nn.ModuleList, record_from: int, keep: set[int] | frozenset[int], last: int) -> None:
        self.layers = layers
        self.record_from = record_from
        self.keep = keep
        self.last = last
        self.calls: dict[int, tuple[tuple, dict, bool]] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.returns_tuple = False
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> "LayerTap":
        for j, layer in enumerate(self.layers):
            self._restore.append(override_forward(layer, self._wrap(j, layer.forward)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for restore in self._restore:
            restore()
        self._restore = []

    def _wrap(self, j: int, original: Callable) -> Callable:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if args:
                hidden, rest, positional = args[0], args[1:], True
            else:
                hidden, rest, positional = kwargs.pop("hidden_states"), (), False
            if j >= self.record_from:
                self.calls[j] = (rest, dict(kwargs), positional)
            if j > self.last:
                return (hidden,) if self.returns_tuple else hidden
            out = original(hidden, *rest, **kwargs) if positional else original(hidden_states=hidden, **kwargs)
            self.returns_tuple = isinstance(out, tuple)
            if j in self.keep:
                self.outputs[j] = out[0] if self.returns_tuple else out
            return out

        return forward

    def run_block(self, j: int, hidden: torch.Tensor, cache: Any) -> torch.Tensor:
        """Block ``j`` on ``hidden`` with the arguments pass 1 gave it, writing into ``cache``."""
        rest, kwargs, positional = self.calls[j]
        kwargs = dict(kwargs)
        for key in compat.CACHE_KWARGS:
            if key in kwargs:
                kwargs[key] = cache
        if cache is None and "use_cache" in kwargs:
            kwargs["use_cache"] = False
        layer = self.layers[j]
        out = layer(hidden, *rest, **kwargs) if positional else layer(hidden_states=hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out


def override_forward(module: nn.Module, forward: Callable) -> Callable[[], None]:
    """Shadow ``module.forward`` on the instance (hooks still run); return the undo."""
    saved = module.__dict__.get("forward")
    module.forward = forward

    def restore() -> None:
        if saved is None:
            del module.forward
        else:
            module.forward = saved

    return restore


@contextmanager
def idle_head(head: nn.Module, active: bool) -> Iterator[None]:
    """While pass 1 skips its last blocks its logits are never used: skip the unembedding matmul too."""
    if not active:
        yield
        return
    vocab = head.weight.shape[0]
    restore = override_forward(head, lambda x, *a, **k: x.new_zeros(*x.shape[:-1], vocab))
    try:
        yield
    finally:
        restore()
