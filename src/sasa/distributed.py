"""Data parallelism: which batches a process runs, and how the processes meet.

Launched by ``accelerate launch --num_processes N -m sasa …`` (or ``torchrun``, or across nodes
with either), every process reads its place from the launcher's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) and joins one process group (gloo on CPU, NCCL on CUDA). Samples
are cut into the same batches a one-process run would make and the batches dealt round-robin, so
every batch holds exactly the samples it would hold in one process: a sharded run computes the very
same batches, and its merged outputs equal a one-process run's. Without a launcher there is one
shard and nothing here does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not a place among {self.world} processes")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def batch_indices(self, n: int, batch_size: int) -> list[list[int]]:
        """This shard's batches (lists of item indices) of ``n`` items cut ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError("batch size must be >= 1")
        cuts = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        return cuts[self.rank::self.world]

    def items(self, items: Sequence[Any], batch_size: int) -> list[Any]:
        """This shard's items, in order, batch after batch (so re-cutting them gives the same batches)."""
        return [items[i] for batch in self.batch_indices(len(items), batch_size) for i in batch]

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every shard's ``obj``, in rank order, on every shard (picklable objects of this run only)."""
        if not self.parallel:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def current_shard() -> Shard:
    """The launcher's place for this process, joining the process group on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Shard()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        log.info("process %d of %d joined the %s group", rank, world, dist.get_backend())
    return Shard(rank, world, local)


def shard_device(shard: Shard, device: str) -> str:
    """``device`` for this process: under a launcher with GPUs, ``auto``/``cuda`` means its own GPU."""
    import torch

    if shard.parallel and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{shard.local_rank}"
    return device
