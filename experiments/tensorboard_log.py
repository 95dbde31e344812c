"""TensorBoard event files of a co-training run: every numeric key of every ``metrics.jsonl`` record, as a scalar.

``mmir train`` and ``mmir sweep`` pass :class:`TensorBoardLog` as (part of) the trainer's ``on_step``
callback, which receives each record as it is logged, so new keys (losses, rewards, removal rates,
``eval/*``, the refinement diagnostics) appear in TensorBoard without code here naming them. The
events go to ``RUN/tensorboard``: ``tensorboard --logdir RUN`` (or the sweep folder) shows them.

One step axis for the whole run: stage 1's steps, then stage 2's after them (``stage1.steps +
step``), so that curves logged in both stages (``cls``) are continuous. A resumed run purges the
events at and after its first new step (TensorBoard's ``purge_step``), which the interrupted run
had logged past its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

    def global_step(self, stage: int, step: int) -> int:
        return step if stage == 1 else self.stage1_steps + step

    def __call__(self, stage: int, step: int, metrics: dict[str, Any]) -> None:
        at = self.global_step(stage, step)
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: the events of an interrupted run past the state this one continues from go
            self._writer = SummaryWriter(str(self.log_dir), purge_step=at, flush_secs=10)
        for key, value in metrics.items():
            if key in ("stage", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self._writer.add_scalar(key, value, at)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
