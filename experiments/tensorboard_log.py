"""TensorBoard event files of a co-training run: every numeric key of every ``metrics.jsonl`` record, as a scalar.

``mmir train`` and ``mmir sweep`` pass :class:`TensorBoardLog` as (part of) the trainer's ``on_step``
callback, which receives each record as it is logged, so new keys (losses, rewards, removal rates,
``eval/*``, the refinement diagnostics) appear in TensorBoard without code here naming them. The
events go to ``RUN/tensorboard``: ``tensorboard --logdir RUN`` (or the sweep folder) shows them.

One step axis for the whole run: stage 1's steps, then stage 2's after them (``stage1.steps +
step``), so that curves logged in both stages (``cls``) are continuous. A resumed run purges the
events at and after its first new step (TensorBoard's ``purge_step``), which the interrupted run
had logged past its checkpoint.

A write that fails (a full disk) is one :class:`OSError` naming the events folder, raised on the
main thread by the next call (TensorBoard writes on a thread of its own); closing a log that has
failed raises nothing more.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

from features.atomic_io import DiskFullError, disk_full_error, is_disk_full

__all__ = ["INSTALL_HINT", "TensorBoardLog", "tensorboard_available"]

INSTALL_HINT = "TensorBoard logging is off: install it with `pip install tensorboard` (or the mmir[tensorboard] extra)"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which torch's SummaryWriter needs) is installed."""
    from importlib.util import find_spec

    return find_spec("tensorboard") is not None


class TensorBoardLog:
    """An ``on_step(stage, step, metrics)`` callback writing the numeric values of ``metrics`` to ``run_dir/tensorboard``.

    :param stage1_steps: the run's ``stage1.steps`` (the offset of stage 2 on the step axis).
    """

    def __init__(self, run_dir: str | Path, stage1_steps: int) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        self.stage1_steps = stage1_steps
        self._writer: Any = None
        self._failed = False

    def global_step(self, stage: int, step: int) -> int:
        return step if stage == 1 else self.stage1_steps + step

    def __call__(self, stage: int, step: int, metrics: dict[str, Any]) -> None:
        at = self.global_step(stage, step)
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                _quiet_writer_thread()
                # purge_step: the events of an interrupted run past the state this one continues from go
                self._writer = SummaryWriter(str(self.log_dir), purge_step=at, flush_secs=10)
            for key, value in metrics.items():
                if key in ("stage", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self._writer.add_scalar(key, value, at)
        except OSError as err:
            raise self._failure(err) from None

    def close(self) -> None:
        """Flush and close the event file; after a failed write, only release it (the failure was raised already)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        file_writers = list((getattr(writer, "all_writers", None) or {}).values())  # close() forgets them
        try:
            writer.close()
            late = _thread_error(file_writers)  # a write of the last events can fail on the thread, unseen by close()
            if late is not None:
                raise late
        except OSError as err:
            if not self._failed:
                raise self._failure(err) from None

    def _failure(self, err: OSError) -> OSError:
        """``err`` as one line naming the events folder and what to do."""
        self._failed = True
        if is_disk_full(err):
            full = disk_full_error(self.log_dir)
            return DiskFullError(errno.ENOSPC, f"{full} (TensorBoard events; --no-tensorboard writes none)")
        return OSError(
            err.errno or errno.EIO, f"cannot write TensorBoard events to {self.log_dir}: {err.strerror or err}"
        )


def _thread_error(file_writers: list[Any]) -> BaseException | None:
    """The error a TensorBoard writer thread of ``file_writers`` kept, if any (None where TensorBoard keeps it elsewhere)."""
    for file_writer in file_writers:
        async_writer = getattr(getattr(file_writer, "event_writer", None), "_async_writer", None)
        error = getattr(getattr(async_writer, "_worker", None), "exception", None)
        if error is not None:
            return error
    return None


_quiet_installed = False


def _quiet_writer_thread() -> None:
    """Drop the traceback TensorBoard's writer thread prints when a write fails.

    The thread keeps the error and TensorBoard raises it again on the main thread at the next
    write or flush, where :class:`TensorBoardLog` reports it as one line; the thread's own
    traceback would only print the same error twice, the second time as a crash.
    """
    global _quiet_installed
    if _quiet_installed:
        return
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args: Any) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook
    _quiet_installed = True
