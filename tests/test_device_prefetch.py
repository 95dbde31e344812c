"""``DevicePrefetcher``: the next batch finished in a thread while the consumer works, in order, errors where they happen."""

from __future__ import annotations

import itertools
import threading

import pytest
import torch

from experiments.device_prefetch import DevicePrefetcher


def test_prefetched_batches_are_the_source_batches_in_order_with_finish_applied():
    with DevicePrefetcher(iter(range(6)), lambda x: torch.full((2,), float(x))) as batches:
        out = list(batches)
    assert [raw for raw, _ in out] == list(range(6))
    assert all(torch.equal(done, torch.full((2,), float(raw))) for raw, done in out)


def test_finish_of_the_next_batch_runs_while_the_consumer_holds_the_current_one():
    started = {i: threading.Event() for i in range(3)}

    def finish(x: int) -> int:
        started[x].set()
        return x

    with DevicePrefetcher(iter(range(3)), finish) as batches:
        assert next(batches) == (0, 0)
        assert started[1].wait(timeout=10)  # no further next(): only the thread can have finished batch 1
        assert next(batches) == (1, 1)


def test_an_error_in_finish_is_raised_by_the_next_that_would_return_that_batch():
    def finish(x: int) -> int:
        if x == 2:
            raise ValueError("clip uid=2: unreadable JPEG")
        return x

    batches = DevicePrefetcher(iter(range(5)), finish)
    assert next(batches) == (0, 0) and next(batches) == (1, 1)
    with pytest.raises(ValueError, match="uid=2"):
        next(batches)
    with pytest.raises(StopIteration):  # closed after the error
        next(batches)
    assert not batches._thread.is_alive()


def test_close_stops_a_thread_waiting_on_a_full_queue():
    batches = DevicePrefetcher(itertools.count(), lambda x: x, depth=1)
    assert next(batches) == (0, 0)
    batches.close()
    assert not batches._thread.is_alive()
    with pytest.raises(StopIteration):
        next(batches)


def test_depth_below_one_is_an_error():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        DevicePrefetcher(iter(()), lambda x: x, depth=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a side stream)")
def test_on_cuda_the_batches_made_on_the_side_stream_equal_those_made_in_front():
    cpu = [torch.randn(64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]

    def finish(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"clip": (x.to("cuda", non_blocking=True) @ x.to("cuda")).relu()}

    with DevicePrefetcher(iter(cpu), finish, device="cuda") as batches:
        for (raw, done), expected in zip(batches, cpu):
            assert raw is expected
            torch.testing.assert_close(done["clip"], finish(expected)["clip"], rtol=0, atol=0)
