"""Collect :class:`ValidationInputs` from a two-stream model and a run's datasets, and score them.

Rows:

- **source validation**: ``datasets["source_val"]`` when a builder provides a held-out labelled
  source split; otherwise a fixed seeded subset of the source *training* rows
  (:func:`subset_indices`). Those rows were trained on, so ``source-accuracy`` (and ``dev``'s loss)
  is then a training score, optimistic beside a held-out one; the subset is the same in every run
  (seed 0 by default, not the run's seed), so that the runs of a sweep are scored on the same rows.
- **target**: a fixed seeded subset of ``datasets["target"]``, the unlabelled target training split
  (what an adapting user has); its labels are never read.

Each row is one item of its dataset (one window of a segment), forwarded in eval mode; logits are
the fused ``model(clips).logits`` and features the concatenated per-modality ``features`` of
:class:`~features.two_stream.TwoStreamOutput`. Items of a training split are drawn from
``(seed, epoch, index)``, so a row's window can differ between evaluations of one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from experiments.data_streams import worker_init_fn
from experiments.validators.inputs import ValidationInputs

__all__ = ["DEFAULT_ROWS", "collect_validation_inputs", "subset_indices", "validation_metrics"]

#: rows per domain when nothing else is said: enough for stable scores, a fraction of a test pass
DEFAULT_ROWS = 512


def subset_indices(size: int, rows: int, seed: int = 0) -> list[int]:
    """A fixed, sorted draw of ``rows`` of ``range(size)`` seeded by ``seed`` (every index when ``rows`` is 0 or >= size)."""
    if rows <= 0 or rows >= size:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(size, generator=generator)[:rows].tolist())


@torch.no_grad()
def _forward(
    model: nn.Module,
    dataset: Any,
    indices: list[int],
    cfg: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits [N, C], features [N, d], labels [N])`` of ``dataset[indices]`` on the CPU, in float32."""
    transform = getattr(dataset, "device_transform", None)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=cfg.evaluation.batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=cfg.data.num_workers,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(0),  # not the global RNG: training's random stream stays as it was
    )
    logits, features, labels = [], [], []
    for batch in loader:
        if transform is not None:
            batch = transform(batch, device)
        clips = {m: batch[m].to(device, non_blocking=True) for m in model.modalities}
        with autocast():
            out = model(clips)
        logits.append(out.logits.float().cpu())
        features.append(torch.cat([out.features[m].float() for m in model.modalities], dim=1).cpu())
        rows = out.logits.shape[0]
        labels.append(torch.as_tensor(batch["label"]).long().cpu() if "label" in batch else torch.full((rows,), -1))
    return torch.cat(logits), torch.cat(features), torch.cat(labels)


def collect_validation_inputs(
    model: nn.Module,
    datasets: Mapping[str, Any],
    cfg: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    *,
    source_rows: int = DEFAULT_ROWS,
    target_rows: int = DEFAULT_ROWS,
    seed: int = 0,
) -> ValidationInputs:
    """Validator inputs of ``model`` (its outputs on source validation rows and target rows; module docstring).

    :param model: the model that is tested (after the evaluation hooks), with ``modalities`` and a
        forward returning ``.logits`` and ``.features`` (:class:`~features.two_stream.TwoStream`).
    :param datasets: ``"source"`` (or a held-out ``"source_val"``) and ``"target"``, as the run's.
    :param cfg: the run config: ``evaluation.batch_size`` and ``data.num_workers`` are read.
    :param autocast: the run's autocast context (bf16 runs); ``None``: none.
    :param source_rows: source validation rows (0: all); ``target_rows``: target rows (0: all).
    :param seed: seeds the row subsets and ``dev``'s folds; fixed by default so every run sees the same rows.
    """
    autocast = autocast or nullcontext
    was_training = model.training
    model.eval()
    try:
        source = datasets["source_val"] if "source_val" in datasets else datasets["source"]
        s_logits, s_features, s_labels = _forward(
            model, source, subset_indices(len(source), source_rows, seed), cfg, device, autocast
        )
        target = datasets["target"]
        t_logits, t_features, _ = _forward(  # the target's labels are dropped here, unread
            model, target, subset_indices(len(target), target_rows, seed + 1), cfg, device, autocast
        )
    finally:
        model.train(was_training)
    labelled = s_labels >= 0  # -1 marks an unlabelled row
    return ValidationInputs(
        source_logits=s_logits[labelled],
        source_labels=s_labels[labelled],
        target_logits=t_logits,
        source_features=s_features[labelled],
        target_features=t_features,
        seed=seed,
    )


def validation_metrics(
    model: nn.Module,
    datasets: Mapping[str, Any],
    cfg: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """``{"val/NAME": score}`` for the validators ``names`` (default: ``cfg.evaluation.validators``); ``{}`` for none.

    Rows per domain: ``cfg.evaluation.validator_rows`` when the config has it, else :data:`DEFAULT_ROWS`.
    """
    from experiments.validators import compute_validators, metric_name

    evaluation = cfg.evaluation
    names = list(getattr(evaluation, "validators", ()) if names is None else names)
    if not names:
        return {}
    rows = int(getattr(evaluation, "validator_rows", DEFAULT_ROWS))
    inputs = collect_validation_inputs(
        model, datasets, cfg, device, autocast, source_rows=rows, target_rows=rows, seed=0
    )
    return {metric_name(name): value for name, value in compute_validators(names, inputs).items()}
