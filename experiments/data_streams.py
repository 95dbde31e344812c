"""Deterministic, resumable batch streams over clip datasets (any number of DataLoader workers).

Batch ``j`` of epoch ``e`` of a stream is a pure function of ``(seed, stream, e, j)``, and every item
is fetched as ``(epoch, index)`` so that a dataset's per-item augmentation (``EpicClips`` draws it
from ``(seed, epoch, index)``) is the same in any worker. Resuming a run therefore replays exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochIndexed(Dataset):
    """Wraps a dataset so that items are fetched by ``(epoch, index)``; calls ``set_epoch`` first when present."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


@dataclass
class StreamPosition:
    epoch: int = 0
    batch: int = 0  # next batch within the epoch


class BatchStream(Sampler):
    """Infinite batch sampler: shuffled epochs cut into full batches (the last partial batch is dropped).

    ``position`` is advanced as batches are *consumed* (:meth:`advance`), not as workers prefetch
    them, so it can be checkpointed at any step.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        stream: int,
        position: StreamPosition | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size * world_size > size:
            raise ValueError(
                f"batch size {batch_size} x {world_size} process(es) exceeds the {size} clips of the dataset"
            )
        self.size, self.seed, self.stream = int(size), int(seed), int(stream)
        # Data parallel: every process walks the same global batches of batch_size * world_size clips
        # and takes its own slice of each, so the processes never see the same clip in a step.
        self.batch_size = int(batch_size) * int(world_size)
        self.rank, self.local = int(rank), int(batch_size)
        self.position = position or StreamPosition()
        self._start = StreamPosition(self.position.epoch, self.position.batch)

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.batch_size

    def batch_indices(self, epoch: int, batch: int) -> list[tuple[int, int]]:
        order = np.random.default_rng((self.seed, self.stream, epoch)).permutation(self.size)
        chunk = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        mine = chunk[self.rank * self.local : (self.rank + 1) * self.local]
        return [(epoch, int(i)) for i in mine]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, batch = self._start.epoch, self._start.batch
        while True:
            yield self.batch_indices(epoch, batch)
            batch += 1
            if batch >= self.batches_per_epoch:
                epoch, batch = epoch + 1, 0

    def advance(self) -> None:
        self.position.batch += 1  # in place: the trainer checkpoints this very object
        if self.position.batch >= self.batches_per_epoch:
            self.position.epoch += 1
            self.position.batch = 0


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: one intra-op thread per library in each loader worker.

    N workers that each run a thread pool sized for the whole machine put N x cores threads on the
    cores. PyTorch already gives its own pool one thread in a worker; this also limits OpenCV's,
    now if it is loaded and, through ``OPENCV_FOR_THREADS_NUM``, if a worker imports it later. Items
    do not depend on it: what a worker decodes is fixed by the dataset's own ``(seed, epoch,
    index)`` randomness, not by threads. Any loader can pass it; :func:`stream_loader` does.
    """
    del worker_id  # the same in every worker
    torch.set_num_threads(1)
    os.environ["OPENCV_FOR_THREADS_NUM"] = "1"  # read when cv2 is first imported
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)


def stream_loader(
    dataset: Any,
    batch_size: int,
    seed: int,
    stream: int,
    position: StreamPosition | None,
    num_workers: int,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Iterator[Any], BatchStream]:
    """An endless iterator of collated batches (this process's share) and the sampler whose position to checkpoint."""
    sampler = BatchStream(len(dataset), batch_size, seed, stream, position, rank=rank, world_size=world_size)
    # Its own generator: a DataLoader iterator otherwise draws its worker base seed from the global
    # RNG, which would shift dropout masks after a resume (iterators are created at different steps).
    loader = DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(seed * 1000 + stream),
    )
    return iter(loader), sampler


def to_device(batch: dict[str, Any], keys: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of ``batch`` under ``keys`` on ``device`` (non-blocking from pinned memory)."""
    return {k: batch[k].to(device, non_blocking=True) for k in keys}
