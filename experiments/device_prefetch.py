"""Finish the next batch while the current step runs: a background thread and, on CUDA, a side stream.

With ``data.decode = "gpu"`` a batch is finished on the device (nvjpeg decoding, crops, flips) by
the dataset's ``device_transform``. Done in front of each step, that work is serial with the step;
:class:`DevicePrefetcher` does it for batch ``k + 1`` in a thread while the loop trains on batch
``k``. On CUDA the thread enqueues its kernels on its own stream, and the consumer's stream waits
on an event recorded after them, so the step never reads a half-finished batch and the two
streams' kernels overlap on the GPU.

What a batch holds does not change: the raw batches come from the same deterministic streams in
the same order, and a dataset's augmentation is drawn from ``(seed, epoch, index)`` in the loader,
not from a global generator the thread could race with. The stream positions that checkpoints
record are advanced by the consumer, as batches are used, never by the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import torch

Raw = TypeVar("Raw")
Done = TypeVar("Done")


class _Failure:
    """What the thread hands over instead of a batch when its source or ``finish`` raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class DevicePrefetcher(Generic[Raw, Done]):
    """Iterate ``(raw, finish(raw))`` over ``source`` with ``finish`` run ``depth`` batches ahead in a thread.

    ``finish`` runs under a side CUDA stream when ``device`` is CUDA (its outputs are made safe to
    use on the consumer's current stream when handed out); elsewhere it runs in the thread as is.
    An exception of ``source`` or ``finish`` is raised by the :meth:`__next__` that would have
    returned that batch. :meth:`close` stops the thread (the iterator is also a context manager).
    """

    def __init__(
        self,
        source: Iterator[Raw],
        finish: Callable[[Raw], Done],
        device: torch.device | str = "cpu",
        depth: int = 1,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.device = torch.device(device)
        self._source, self._finish = source, finish
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._thread = threading.Thread(target=self._work, name="mmir-device-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                raw = next(self._source)
                if self._stream is None:
                    self._put((raw, self._finish(raw), None))
                    continue
                with torch.cuda.stream(self._stream):
                    done = self._finish(raw)
                    ready = torch.cuda.Event()
                    ready.record(self._stream)
                self._put((raw, done, ready))
        except BaseException as error:  # StopIteration included: the consumer ends where the source ended
            self._put(_Failure(error))

    def _put(self, item: Any) -> None:
        # a bounded wait, so that close() frees a thread blocked on a full queue
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> DevicePrefetcher[Raw, Done]:
        return self

    def __next__(self) -> tuple[Raw, Done]:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            if isinstance(item.error, StopIteration):
                raise StopIteration
            raise item.error
        raw, done, ready = item
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)
            # memory made on the side stream must not be reused before the consumer's kernels read it
            for tensor in _tensors(done):
                if tensor.is_cuda:
                    tensor.record_stream(consumer)
        return raw, done

    def close(self) -> None:
        """Stop the thread (it finishes the batch it is on); later calls of ``next`` end the iteration."""
        self._done = True
        self._stop.set()
        while True:  # unblock a thread waiting to put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> DevicePrefetcher[Raw, Done]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
