"""Resumable training chunks: a long stage runs in chunks that stop at a time budget and continue
from their last checkpoint, with no step trained twice.

A checkpoint is one safetensors file (no pickle): the adapter factors, AdamW's moments and step
counts, and in its header the stage's step, loss history and a digest of the stage's settings, so
a checkpoint from other settings is never resumed.  The batches a stage trains on come from a
seeded generator, so resuming skips the batches already trained on and the run continues on exactly
the batches an uninterrupted run would see: a resumed stage ends with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sasa.store.atomic import atomic_path

log = logging.getLogger(__name__)


class ChunkPaused(Exception):
    """A stage stopped at its chunk's time budget; its checkpoint holds everything done so far."""

    def __init__(self, stage: str, step: int, steps: int, checkpoint: Path) -> None:
        super().__init__(f"{stage}: paused after step {step} of {steps}; run the same command again to continue "
                         f"from {checkpoint}")
        self.stage, self.step, self.steps, self.checkpoint = stage, step, steps, checkpoint


@dataclass(frozen=True)
class Ending:
    """End ``stage`` at step ``at`` of its schedule instead of its last, the learning rate falling
    linearly to zero over the last ``cooldown`` steps (the cooldown of a warmup-stable-decay
    schedule).  A long run stopped at its budget is annealed from its own checkpoint in a branch
    with a checkpoint of its own, so the run itself can still continue."""

    stage: str
    at: int
    cooldown: int

    def __post_init__(self) -> None:
        if not 1 <= self.cooldown <= self.at:
            raise ValueError(f"ending of the {self.stage} stage: the cooldown ({self.cooldown} steps) must be "
                             f"1 to {self.at} steps, the step it ends at")

    @property
    def start(self) -> int:
        """The first step of the cooldown: the run's checkpoint it starts from must not be later."""
        return self.at - self.cooldown

    def factor(self, scheduled: float, step: int) -> float:
        """The learning-rate factor at ``step``, given the schedule's factor at the cooldown's start."""
        return scheduled * max(0.0, (self.at - step) / self.cooldown)

    def to_dict(self) -> dict:
        return {"at": self.at, "cooldown": self.cooldown}

    def record(self, scheduled: int) -> dict:
        """What a stage's training log says of its ending: where it ended, of how many scheduled steps."""
        return {**self.to_dict(), "scheduled": scheduled}


@dataclass
class Chunking:
    """Where a stage keeps its checkpoint, how often it writes it, and when a chunk stops."""

    directory: Path
    every_s: float = 300.0
    stop_after_s: float | None = None  # None: run to the end
    started: float = 0.0
    ending: Ending | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.started = self.started or time.monotonic()

    def path(self, stage: str, settings: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return self.directory / f"{stage}-{digest}.safetensors"

    def for_stage(self, stage: str, settings: dict[str, Any]) -> tuple[Path, Path | None, Ending | None]:
        """(this run's checkpoint, the checkpoint it may start from, the stage's ending): for a stage
        with an :class:`Ending`, the branch's own checkpoint and the full run's; else the run's, None, None."""
        ending = self.ending if self.ending is not None and self.ending.stage == stage else None
        if ending is None:
            return self.path(stage, settings), None, None
        return self.path(stage, {**settings, "ending": ending.to_dict()}), self.path(stage, settings), ending

    def out_of_time(self) -> bool:
        return self.stop_after_s is not None and time.monotonic() - self.started >= self.stop_after_s


def save_checkpoint(path: Path, step: int, history: list[dict], modules: dict[str, Any],
                    optimizer: torch.optim.Optimizer) -> None:
    """Factors and optimizer state at ``step`` (written atomically)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, module in modules.items():
        tensors[f"lora.{name}.a"] = module.lora_a.detach().contiguous()
        tensors[f"lora.{name}.b"] = module.lora_b.detach().contiguous()
    for i, p in enumerate(params):
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step), "history": json.dumps(history)})
    log.info("checkpoint at step %d: %s", step, path)


def load_checkpoint(path: Path, modules: dict[str, Any], optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore what :func:`save_checkpoint` wrote; returns (step, history)."""
    from safetensors import safe_open

    params = [p for group in optimizer.param_groups for p in group["params"]]
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        names = set(fh.keys())
        with torch.no_grad():
            for name, module in modules.items():
                module.lora_a.copy_(fh.get_tensor(f"lora.{name}.a"))
                module.lora_b.copy_(fh.get_tensor(f"lora.{name}.b"))
        for i, p in enumerate(params):
            state = {k.split(".", 2)[2]: fh.get_tensor(k) for k in names if k.startswith(f"opt.{i}.")}
            if state:
                optimizer.state[p] = state
    return int(meta["step"]), json.loads(meta["history"])
