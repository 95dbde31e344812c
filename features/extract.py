"""Backbone -> snapshot: run any per-modality feature extractor over a clip loader and write a snapshot."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from features.domains import DOMAINS
from features.snapshot import SnapshotWriter

# Keys of a clip batch besides the per-modality clip tensors.
META_KEYS: tuple[str, ...] = ("label", "uid", "domain", "is_negative")


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract_snapshot` wrote."""

    path: Path
    rows: dict[str, int]  # clips per domain
    feature_dim: int
    batches: int
    seconds: float

    @property
    def clips_per_second(self) -> float:
        total = sum(self.rows.values())
        return total / self.seconds if self.seconds > 0 else float("inf")


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _domains_of(value: Any, batch_index: int) -> np.ndarray:
    """Domain names (``"source"``/``"target"``) of a batch's clips from names or 0/1 labels."""
    arr = np.asarray(value.cpu() if isinstance(value, Tensor) else value)
    if arr.dtype.kind in "iub":
        bad = ~np.isin(arr, (0, 1))
        names = np.where(arr == 1, "target", "source")
    else:
        arr = arr.astype(str)
        bad = ~np.isin(arr, DOMAINS)
        names = arr
    if bad.any():
        raise ValueError(
            f"batch {batch_index}: 'domain' must be 'source'/'target' or 0/1, got {np.unique(arr[bad])[:5].tolist()}"
        )
    return names


@torch.no_grad()
def _features(
    backbones: Mapping[str, nn.Module], devices: Mapping[str, torch.device], batch: Mapping[str, Any], batch_index: int
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for modality, backbone in backbones.items():
        if modality not in batch:
            raise KeyError(f"batch {batch_index} has no clips for modality {modality!r}; keys: {sorted(batch)}")
        clips = torch.as_tensor(batch[modality]).to(devices[modality], non_blocking=True)
        feats = backbone(clips)
        if feats.ndim != 2 or feats.shape[0] != clips.shape[0]:
            raise ValueError(
                f"backbone for {modality!r} must map a batch of {clips.shape[0]} clips to [B, d] features, "
                f"got shape {tuple(feats.shape)}"
            )
        out[modality] = feats.float().cpu().numpy()
    return out


def extract_snapshot(
    backbones: Mapping[str, nn.Module],
    clips: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    num_classes: int,
    dtype: str = "float16",
    step: int = 0,
    stage: int = 0,
    config: Mapping[str, Any] | None = None,
    discriminators: Mapping[str, nn.Module] | None = None,
    target_labels: bool = True,
    total: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> ExtractResult:
    """Extract features of every clip with ``backbones`` and write them as a snapshot at ``path``.

    :param backbones: modality -> module mapping a clip batch ``[B, C, T, H, W]`` to ``[B, d]``
        features (same ``d`` for every modality). Run in eval mode under ``torch.no_grad``; each
        module's training mode is restored afterwards. Clips go to the device of its parameters.
    :param clips: an iterable of batch dicts (e.g. a ``DataLoader``): per-modality clip tensors,
        ``"label"`` ``[B]`` ints (``-1`` = outside the source classes), ``"uid"`` ``[B]``, ``"domain"``
        ``[B]`` (``"source"``/``"target"`` or 0/1), optional ``"is_negative"`` ``[B]`` bools.
    :param path: the snapshot file, written atomically (nothing under this name if extraction fails).
    :param num_classes: K, the number of source classes.
    :param dtype: stored feature type, ``"float16"`` (default) or ``"float32"``.
    :param step, stage, config: recorded in the snapshot's root attributes.
    :param discriminators: optional modality -> discriminator whose weights are stored too.
    :param target_labels: store target labels (False for an unlabelled target domain).
    :param total: number of batches for the progress bar (default ``len(clips)`` when it has one).
    :param progress: show a rich progress bar (batches, clips/s, ETA).
    :param console: the rich console to draw on.
    """
    if not backbones:
        raise ValueError("backbones must map at least one modality to a module")
    for modality, module in backbones.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"backbones[{modality!r}] must be a torch.nn.Module, got {type(module).__name__}")
    if total is None and hasattr(clips, "__len__"):
        total = len(clips)  # type: ignore[arg-type]
    devices = {m: _device_of(b) for m, b in backbones.items()}
    was_training = {m: b.training for m, b in backbones.items()}
    writer: SnapshotWriter | None = None
    rows = dict.fromkeys(DOMAINS, 0)
    batches = 0
    start = time.perf_counter()
    bar = Progress(
        TextColumn("[bold]extract[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        TextColumn("{task.fields[clips]} clips, {task.fields[rate]:.1f} clips/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )
    try:
        for b in backbones.values():
            b.eval()
        with bar:
            task = bar.add_task("extract", total=total, clips=0, rate=0.0)
            for batches, batch in enumerate(clips, start=1):
                missing = [k for k in ("label", "uid", "domain") if k not in batch]
                if missing:
                    raise KeyError(
                        f"batch {batches - 1} lacks {missing}; a clip batch needs per-modality clips and {list(META_KEYS)}"
                    )
                feats = _features(backbones, devices, batch, batches - 1)
                if writer is None:
                    dims = {m: f.shape[1] for m, f in feats.items()}
                    if len(set(dims.values())) != 1:
                        raise ValueError(f"every backbone must produce the same feature width, got {dims}")
                    writer = SnapshotWriter(
                        path,
                        feature_dim=next(iter(dims.values())),
                        num_classes=num_classes,
                        modalities=tuple(backbones),
                        dtype=dtype,
                        step=step,
                        stage=stage,
                        config=config,
                    )
                domain = _domains_of(batch["domain"], batches - 1)
                label = np.asarray(torch.as_tensor(batch["label"]).cpu())
                uid = np.asarray(batch["uid"].cpu() if isinstance(batch["uid"], Tensor) else batch["uid"])
                neg = batch.get("is_negative")
                neg = None if neg is None else np.asarray(torch.as_tensor(neg).cpu())
                for name in DOMAINS:
                    mask = domain == name
                    if not mask.any():
                        continue
                    writer.append(
                        name,
                        {m: f[mask] for m, f in feats.items()},
                        label=label[mask] if (name == "source" or target_labels) else None,
                        uid=uid[mask],
                        is_negative=None if neg is None else neg[mask],
                    )
                    rows[name] += int(mask.sum())
                elapsed = time.perf_counter() - start
                done = sum(rows.values())
                bar.update(task, completed=batches, clips=done, rate=done / elapsed if elapsed > 0 else 0.0)
        if writer is None:
            raise ValueError("clips yielded no batches: nothing to write")
        for modality, disc in (discriminators or {}).items():
            writer.save_discriminator(modality, disc)
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for m, b in backbones.items():
            b.train(was_training[m])
    return ExtractResult(
        path=Path(path), rows=rows, feature_dim=writer.feature_dim, batches=batches, seconds=time.perf_counter() - start
    )
