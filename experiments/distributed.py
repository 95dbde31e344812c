"""Data-parallel co-training under ``torchrun`` (gloo on CPU, nccl on GPU).

Every process builds identical modules from the same seed, trains on its own slice of each global
batch, and averages gradients with one all-reduce per step before every optimizer step, so the
backbones, heads, discriminators and agents' Q-networks stay identical across processes (tested).
The stage-2 step calls ``extract_features``/``classify`` rather than ``forward``, which
``DistributedDataParallel``'s hooks would not see; an explicit gradient all-reduce is exact here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str, device: torch.device) -> DistContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def average_gradients(modules: Iterable[nn.Module], ctx: DistContext) -> None:
    """All-reduce (mean) the gradients of ``modules`` in one flat buffer.

    Parameters without a gradient keep none: which parameters get one is decided by the config
    and the replay sizes, identical in every process.
    """
    if not ctx.enabled:
        return
    params = [p for m in modules for p in m.parameters() if p.requires_grad and p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
