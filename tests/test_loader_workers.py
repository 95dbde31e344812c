"""Loader workers: one thread per library in each worker, and the same batches with any worker count."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from video_helpers import tiny_video_root

from experiments.data_streams import stream_loader, worker_init_fn
from features.data.epic import EpicClips


class ThreadCounts(Dataset):
    """Reports the thread pools of the process that loads the item (cv2 imported there, after set-up)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, int]:
        import cv2

        return {"torch": torch.get_num_threads(), "cv2": cv2.getNumThreads()}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_worker_init_fn_gives_each_worker_one_thread_per_library(context: str) -> None:
    # fork: cv2 is already imported in the parent; spawn: a fresh worker imports it after set-up.
    cv2 = pytest.importorskip("cv2")
    loader = DataLoader(
        ThreadCounts(), batch_size=1, num_workers=1, worker_init_fn=worker_init_fn, multiprocessing_context=context
    )
    assert [{k: int(v) for k, v in batch.items()} for batch in loader] == [{"torch": 1, "cv2": 1}] * 2
    assert cv2.getNumThreads() >= 1  # the parent's pools are left alone


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> EpicClips:
    return EpicClips(tiny_video_root(tmp_path_factory), "S", "train", size=24, num_frames=8, seed=0)


def test_stream_loader_batches_are_the_same_with_any_worker_count(clips: EpicClips) -> None:
    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        it, _ = stream_loader(clips, 4, seed=0, stream=1, position=None, num_workers=workers)
        return [next(it) for _ in range(3)]

    reference = batches(0)
    for workers in (1, 2):
        for got, want in zip(batches(workers), reference, strict=True):
            assert got.keys() == want.keys()
            for key in want:
                if isinstance(want[key], torch.Tensor):
                    assert torch.equal(got[key], want[key]), (workers, key)
                else:
                    assert got[key] == want[key], (workers, key)
