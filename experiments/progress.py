"""The rich progress display of co-training runs (``mmir train``, ``mmir demo``)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class StepsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.2f} steps/s")


def training_progress(console: Any = None) -> Progress:
    """Description, bar, step/total, losses and agents' statistics, steps/s, elapsed, ETA."""
    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    StepsPerSecondColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


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
