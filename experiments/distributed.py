"""Data-parallel co-training under ``torchrun`` with ``torch.nn.parallel.DistributedDataParallel``.

Every process builds identical modules from the same seed and trains on its own slice of each global
batch. The :class:`~experiments.cotrain_module.CoTrainModule` is wrapped in DDP (gloo on CPU, nccl on
GPU): gradients are averaged by DDP's bucketed all-reduce, overlapped with the backward pass, and
rank 0's buffers (BatchNorm running statistics) are broadcast at every forward. The agents'
Q-networks that learn through the joint backward are submodules of the CoTrainModule and sync the
same way.

``find_unused_parameters`` is on only when some parameters may get no gradient in a step (agents
before their replay fills, MCD's phases, discriminators that no objective uses); ``static_graph``
stays off because that set changes during a run (the agents' Q-networks join once they learn).
``distributed.sync_batchnorm = true`` converts every BatchNorm to :class:`torch.nn.SyncBatchNorm` on
GPU; PyTorch's kernel (and DDP's check) is GPU-only, so on CPU :class:`CPUSyncBatchNorm` computes the
same global statistics with autograd-aware all-reduces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


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


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a CPU (gloo) process group; PyTorch's SyncBatchNorm is GPU-only.

    Mean and variance come from two all-reduces (the sum, then the sum of squared deviations: the
    two-pass form, as accurate as one process's BatchNorm); ``torch.distributed.nn.functional.all_reduce``
    carries the gradient back to every process's inputs. Running statistics use the unbiased global
    variance, as BatchNorm does. Outside a process group, or in eval mode, it is a plain BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype)
        stats = all_reduce(torch.cat([input.sum(dims), count]))
        n = stats[-1]
        mean = stats[:-1] / n
        centred = input - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised over the process group: :class:`torch.nn.SyncBatchNorm` on GPU,
    :class:`CPUSyncBatchNorm` on CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _replace_batchnorm(module, CPUSyncBatchNorm)


def _replace_batchnorm(module: nn.Module, cls: type[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) is not cls:
        new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, _replace_batchnorm(child, cls))
    return module


def wrap_ddp(module: nn.Module, device: torch.device, *, static_graph: bool, find_unused_parameters: bool) -> nn.Module:
    """``module`` in DistributedDataParallel (one device per process)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    )
    return DistributedDataParallel(
        module, device_ids=device_ids, static_graph=static_graph, find_unused_parameters=find_unused_parameters
    )


class _PlainBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of any input rank: what a synchronised BatchNorm computes within one process."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with its synchronised BatchNorms made plain (statistics of one process: AdaBN on rank 0)."""
    if isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
        return _replace_batchnorm(module, _PlainBatchNorm)
    for name, child in module.named_children():
        setattr(module, name, revert_sync_batchnorm(child))
    return module
