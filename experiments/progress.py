"""The rich progress display of co-training runs (``mmir train``, ``mmir demo``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class StepsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.2f} steps/s")


def training_progress(console: Any = None) -> Progress:
    """Description, bar, step/total, losses and agents' statistics, steps/s, elapsed, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        StepsPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def step_info(stage: int, metrics: dict[str, float]) -> str:
    """One line of the latest step: losses (cls, adv, dqn), agents' mean reward and removal rate, their greedy
    agreement with the least relevant row, precision against planted negatives, the discriminators' AUC, last top-1."""
    info = f"cls {metrics['cls']:.3f}"
    if stage == 2:
        info += f" adv {metrics['adv']:.3f} dqn {metrics['dqn']:.3f}"
        rewards = [v for k, v in metrics.items() if k.startswith("reward/")]
        rates = [v for k, v in metrics.items() if k.startswith("removal_rate/")]
        if rewards:
            info += f" reward {np.mean(rewards):+.2f} removed {np.mean(rates):.0%}"
        for label, name in (("agree", "agreement"), ("prec", "precision"), ("auc", "disc_auc")):
            values = [v for k, v in metrics.items() if k.startswith(f"diag/{name}/")]
            if values:  # the refinement diagnostics, mean over agents (docs/results-refinement.md)
                info += f" {label} {np.mean(values):.2f}"
        if "eval/top1" in metrics:
            info += f" top-1 {metrics['eval/top1']:.1%}"
    return info


def progress_hook(progress: Progress, tasks: dict[int, Any]) -> Callable[[int, int, dict[str, float]], None]:
    """An ``on_step`` callback for :class:`~experiments.cotrain.CoTrainer` updating ``tasks[stage]``."""

    def hook(stage: int, step: int, metrics: dict[str, float]) -> None:
        if stage in tasks:
            progress.update(tasks[stage], completed=step, info=step_info(stage, metrics))

    return hook


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plain_log_hook(
    totals: dict[int, int],
    every: int,
    print_line: Callable[[str], None] = print,
    clock: Callable[[], float] | None = None,
) -> Callable[[int, int, dict[str, float]], None]:
    """An ``on_step`` callback printing one plain line every ``every`` steps and at each stage's end (logs, not terminals).

    ``stage 2 step 400/800  loss 1.234  cls 0.912 adv 1.380 ...  12.3 steps/s  eta 1m05s``: nothing
    is cut to a terminal's width, and each line stands alone in a cluster or nohup log.
    """
    import time

    clock = clock or time.monotonic
    started: dict[int, tuple[float, int]] = {}  # stage -> (time, step) when this process first saw it

    def hook(stage: int, step: int, metrics: dict[str, float]) -> None:
        now = clock()
        t0, s0 = started.setdefault(stage, (now, step - 1))
        total = totals.get(stage, 0)
        if step % every and step != total:
            return
        rate = (step - s0) / (now - t0) if now > t0 else float("nan")
        line = f"stage {stage} step {step}/{total}"
        if "loss" in metrics:
            line += f"  loss {metrics['loss']:.3f}"
        line += f"  {step_info(stage, metrics)}"
        if rate == rate and rate > 0:
            line += f"  {rate:.1f} steps/s  eta {_duration((total - step) / rate)}"
        print_line(line)

    return hook
