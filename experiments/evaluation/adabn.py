"""Adaptive Batch Normalisation: target-domain BatchNorm statistics at test time.

Li, Wang, Shi, Liu, Hou. "Revisiting Batch Normalization For Practical Domain Adaptation", ICLR
workshop 2017 (arXiv:1603.04779). AdaBN trains on the source only and, before testing, replaces every
BatchNorm layer's running mean and variance by statistics of the target domain; weights stay as
they are. Here the statistics are the exact averages over the target training clips (cumulative
average, ``momentum=None``) with dropout off.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    modalities: Iterable[str],
    device: torch.device | str = "cpu",
    max_batches: int = 0,
) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are those of ``batches`` (the model itself is untouched).

    :param batches: target-domain batches (dicts with one clip tensor per modality).
    :param max_batches: stop after this many batches; 0 uses them all.
    :raises ValueError: the model has no BatchNorm layer, or no batch was given.
    """
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise ValueError("AdaBN needs BatchNorm layers; the model has none")
    adapted.eval()  # dropout off; only the BatchNorm layers gather statistics
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch counts equally
        bn.train()
    modalities = tuple(modalities)
    seen = 0
    for batch in batches:
        forward = getattr(adapted, "extract_features", adapted)
        forward({m: batch[m].to(device) for m in modalities})
        seen += 1
        if max_batches and seen >= max_batches:
            break
    if seen == 0:
        raise ValueError("AdaBN got no target batches to estimate statistics from")
    adapted.eval()
    return adapted


def adabn_hook(model: nn.Module, datasets: Mapping[str, Any], cfg: Any, device: torch.device) -> nn.Module:
    """The ``adabn`` evaluation hook: a copy of ``model`` with BatchNorm statistics of the target training clips."""
    from torch.utils.data import DataLoader

    from experiments.distributed import CPUSyncBatchNorm, revert_sync_batchnorm

    if any(
        isinstance(m, (nn.SyncBatchNorm, CPUSyncBatchNorm)) for m in model.modules()
    ):  # rank 0 alone: no peers to sync with
        model = revert_sync_batchnorm(copy.deepcopy(model))
    # own generator: a DataLoader without one draws its seed from the global RNG, which would
    # shift training's dropout stream and make AdaBN's training differ from source-only's
    target = DataLoader(
        datasets["target"],
        batch_size=cfg.evaluation.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    transform = getattr(datasets["target"], "device_transform", None)  # GPU-decoded clips are finished on the device
    batches = target if transform is None else (transform(batch, device) for batch in target)
    return adapt_batchnorm(model, batches, model.modalities, device, cfg.evaluation.adabn_batches)
