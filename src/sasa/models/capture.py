"""The one hook primitive: named decoder blocks in, their states out, hooks always removed.

``capture`` keeps block outputs during a forward; ``replace_output`` swaps a block's output;
``edit_input`` rewrites what a module receives (head ablation).  Each is a context manager whose
hooks are removed on exit, also when the forward raises.  The engine intercepts blocks by
overriding their ``forward`` (it must stop the first pass early), which hooks cannot do; everything
else that reads or writes states goes through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def hidden_of(output: Any) -> torch.Tensor:
    """A block's hidden state from its output (a tensor, or a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def hooked(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(blocks: nn.ModuleList | Any, layers: Iterable[int], *, last_position: bool = False,
            keep: Callable[[torch.Tensor], bool] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Yield a dict that fills with ``{layer: output}`` of ``blocks[layer]`` on each forward.

    ``blocks`` is an adapter (its decoder blocks) or a module list.  ``last_position`` keeps only the
    last position in float32 (``[B, D]``) instead of the whole ``[B, T, D]``; ``keep`` filters which
    forwards are recorded (e.g. only the prompt's, not a decoding step's)."""
    modules = getattr(blocks, "layers", blocks)
    kept: dict[int, torch.Tensor] = {}

    def record(j: int) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            h = hidden_of(output)
            if keep is None or keep(h):
                kept[j] = h[:, -1].float() if last_position else h
        return hook

    with hooked([modules[j].register_forward_hook(record(j)) for j in layers]):
        yield kept


@contextmanager
def replace_output(module: nn.Module, new: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """``module``'s hidden output becomes ``new(hidden)`` (None leaves that forward unchanged)."""

    def hook(mod: nn.Module, args: Any, output: Any) -> Any:
        value = new(hidden_of(output))
        if value is None:
            return output
        return (value, *output[1:]) if isinstance(output, tuple) else value

    with hooked([module.register_forward_hook(hook)]):
        yield


@contextmanager
def edit_input(module: nn.Module, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """``module`` receives ``edit(x)`` for its first positional input."""

    def hook(mod: nn.Module, args: tuple) -> tuple:
        return (edit(args[0]),) + tuple(args[1:])

    with hooked([module.register_forward_pre_hook(hook)]):
        yield
