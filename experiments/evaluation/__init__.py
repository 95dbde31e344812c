"""Target evaluation of a co-training run, with evaluation hooks where a method's evaluation differs.

An evaluation hook maps the trained model to the model that is tested (``adabn``: a copy with the
target training clips' BatchNorm statistics, Li et al. 2017). Hooks are registered by name and
chosen by the config: ``evaluation.hooks = ["adabn"]`` (:mod:`experiments.evaluation.adabn`) or a plug-in's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from experiments.data_streams import worker_init_fn
from experiments.registries import EVALUATION_HOOKS
from experiments.validators import validation_metrics

EvaluationHook = Callable[[nn.Module, Mapping[str, Any], Any, torch.device], nn.Module]


def register_evaluation_hook(name: str, hook: str | EvaluationHook, overwrite: bool = False) -> None:
    """Make ``evaluation.hooks = [name]`` test ``hook(model, datasets, cfg, device)`` instead of the model."""
    EVALUATION_HOOKS.register(name, hook, overwrite=overwrite)


def _resolve(name: str) -> EvaluationHook:
    return EVALUATION_HOOKS.resolve(name, "evaluation.hooks")


def configured_hooks(cfg: Any) -> list[str]:
    """The hooks a config selects, in order (``evaluation.hooks``)."""
    return list(cfg.evaluation.hooks)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    datasets: Mapping[str, Any],
    cfg: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    indices: Sequence[int] | None = None,
) -> dict[str, float]:
    """Target top-1 and mean class accuracy over the whole test split (every window, none dropped).

    The softmax of the fused logits is averaged over each segment's windows (paper 4.2, MM-SADA).
    ``indices``: only these test windows (the schedule's monitor subsample). A test set decoded on
    the device (``data.decode = "gpu"``) is finished by its ``device_transform``, as training clips are.
    """
    was_training = model.training
    model.eval()
    tested = model
    for name in configured_hooks(cfg):
        tested = _resolve(name)(tested, datasets, cfg, device)
    test = datasets["test"]
    transform = getattr(test, "device_transform", None)
    loader = DataLoader(
        test if indices is None else Subset(test, list(indices)),
        batch_size=cfg.evaluation.batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=cfg.data.num_workers,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(0),
    )
    probs: dict[int, Tensor] = {}
    labels: dict[int, int] = {}
    for batch in loader:
        if transform is not None:
            batch = transform(batch, device)
        clips = {m: batch[m].to(device, non_blocking=True) for m in model.modalities}
        with autocast():
            p = torch.softmax(tested(clips).logits.float(), dim=1).cpu()
        for uid, label, row in zip(batch["uid"].tolist(), batch["label"].tolist(), p):
            probs[uid] = probs.get(uid, 0) + row
            labels[uid] = label
    model.train(was_training)
    uids = sorted(probs)
    pred = torch.stack([probs[u] for u in uids]).argmax(1).numpy()
    truth = np.array([labels[u] for u in uids])
    valid = truth >= 0
    correct = pred[valid] == truth[valid]
    per_class = [float(correct[truth[valid] == c].mean()) for c in np.unique(truth[valid])]
    result = {
        "top1": float(correct.mean()),
        "mean_class_accuracy": float(np.mean(per_class)),
        "segments": int(valid.sum()),
    }
    if indices is None:  # full evaluations only: the monitor stays cheap
        # a validator that cannot score (NaN: e.g. a degenerate domain classifier) is left out, never a bare NaN in JSON
        scores = validation_metrics(tested, datasets, cfg, device, autocast)
        result.update({k: v for k, v in scores.items() if math.isfinite(v)})
    return result
