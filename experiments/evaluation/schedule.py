"""Which stage-2 steps test the model, and on what.

The reported figure (``top1_last``) is the mean over the last ``evaluation.last`` evaluations taken
``evaluation.every`` steps apart and ending at the last step of stage 2 (paper 4.2; MM-SADA's
released test script evaluates the checkpoints of steps 5600-6000 every 50). Only those steps need
the whole test split:

- ``schedule = "protocol"`` (default): the whole test split at exactly those ``last`` steps;
  between them, every ``monitor_every`` steps (0: never), a cheap **monitor** on a fixed subsample of
  ``monitor_windows`` test windows (the same windows every time, drawn once with a seeded
  generator), logged as ``monitor/top1`` and ``monitor/mean_class_accuracy``. Monitors are progress
  signals only: they never enter the summary or ``top1_last``.
- ``schedule = "every"``: the whole test split every ``every`` steps and at the last step (the
  schedule before the protocol one; ``top1_last`` averages the last ``last`` of them).

When stage 2 is a multiple of ``every`` steps long, both schedules report the same figure.
"""

from __future__ import annotations

from typing import Literal

import torch

Schedule = Literal["protocol", "every"]


def full_evaluation_steps(total: int, every: int, last: int, schedule: Schedule = "protocol") -> list[int]:
    """The stage-2 steps (1-based, ascending) that evaluate on the whole test split."""
    if total <= 0:
        return []
    if schedule == "every":
        steps = list(range(every, total + 1, every))
        return steps if steps and steps[-1] == total else [*steps, total]
    return sorted(step for step in (total - k * every for k in range(last)) if step > 0)


def monitor_steps(total: int, monitor_every: int, full: list[int] | set[int]) -> list[int]:
    """The steps that run the cheap monitor: multiples of ``monitor_every`` that are no full evaluation."""
    if monitor_every <= 0:
        return []
    taken = set(full)
    return [step for step in range(monitor_every, total + 1, monitor_every) if step not in taken]


def monitor_indices(test_size: int, monitor_windows: int, seed: int = 0) -> list[int]:
    """The fixed subsample of test-window indices the monitor evaluates (ascending; all when there are fewer)."""
    if monitor_windows >= test_size:
        return list(range(test_size))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(test_size, generator=generator)[:monitor_windows].tolist())
