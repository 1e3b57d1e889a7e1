"""Training on several processes: where a process sits, and how all of them agree.

Under ``torchrun --nproc_per_node=K`` each process of :func:`hamnet.train` takes a contiguous K-th of every
global batch and the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU). Only the
main rank locks and writes the run folder; the others learn its verdict (go on, or the same error) by a
broadcast (:func:`on_main`), and a loss that stops being finite in one process stops every process at
the same batch (:func:`finite_everywhere`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Context", "close_distributed", "distributed_context", "finite_everywhere", "on_any_rank", "on_main"]


@dataclass(frozen=True)
class Context:
    """Where this process sits: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device: str = "cpu") -> Context:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)  # before the group exists, so NCCL binds each rank to its own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(rank=rank, world_size=world_size,
                   device=torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu"))


def close_distributed(context: Context, *, succeeded: bool) -> None:
    """Leave the process group. After success every rank meets at a barrier first, so teardown never
    races; after a failure the group is destroyed at once (a barrier could meet another rank's
    all-reduce and hang)."""
    if context.world_size > 1 and dist.is_initialized():
        if succeeded:
            dist.barrier()
        dist.destroy_process_group()


def on_main(context: Context, work: Callable[[], Any]) -> Any:
    """``work()`` done by the main rank alone; its result, or its ``ValueError`` / ``OSError`` raised,
    on every rank, so that all ranks go on together or all fail with the same line."""
    if context.world_size == 1:
        return work()
    outcome: list[Any] = [None]
    if context.is_main:
        try:
            outcome[0] = work()
        except (ValueError, OSError) as error:
            outcome[0] = error
    dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], (ValueError, OSError)):
        raise outcome[0]
    return outcome[0]


def finite_everywhere(value: float, context: Context) -> bool:
    """Whether ``value`` is finite on every rank (all ranks then stop at the same batch, none left
    waiting in an all-reduce)."""
    return not on_any_rank(not math.isfinite(value), context)


def on_any_rank(flag: bool, context: Context) -> bool:
    """Whether ``flag`` holds on any rank: one decision that every rank takes alike."""
    if context.world_size > 1:
        value = torch.tensor([1.0 if flag else 0.0], device=context.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        flag = bool(value.item() == 1.0)
    return flag
