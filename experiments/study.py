"""Offline agent studies: run an agent on an instance-refinement env and measure its selections."""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class SelectionStats:
    """What an agent's selections achieved over some episodes (ground truth from planted negatives)."""

    episodes: int
    steps: int
    mean_episode_reward: float
    precision: float  # negatives among valid selections
    recall: float  # negatives selected / negatives shown in the candidate sets
    invalid_rate: float  # invalid actions / steps
    steps_per_second: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluate_selection(
    agent: Any,
    env: Any,
    episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    progress: Callable[[int], None] | None = None,
) -> SelectionStats:
    """Run ``agent.predict`` for ``episodes`` episodes of ``env`` (seeded once with ``seed``).

    Precision and recall need ``info["is_negative"]`` (a source with ground truth); without it
    they are NaN. ``progress`` is called with the number of finished episodes.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    base = env.unwrapped
    rewards = np.zeros(episodes)
    selected = negatives_selected = negatives_shown = invalid = steps = 0
    has_truth = bool(getattr(base.source, "has_ground_truth", False))
    takes_masks = "action_masks" in inspect.signature(agent.predict).parameters
    start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, info = env.reset()
        truth = base.candidate_is_negative if has_truth else None
        if truth is not None:
            negatives_shown += int(np.count_nonzero(truth))
        done = False
        while not done:
            masks = {"action_masks": info["action_mask"]} if takes_masks else {}
            action, _ = agent.predict(obs, deterministic=deterministic, **masks)
            obs, reward, terminated, truncated, info = env.step(action)
            rewards[episode] += reward
            steps += 1
            if info["invalid_action"]:
                invalid += 1
            else:
                selected += 1
                negatives_selected += int(info.get("is_negative", False))
            done = terminated or truncated
        if progress is not None:
            progress(episode + 1)
    elapsed = time.perf_counter() - start
    return SelectionStats(
        episodes=episodes,
        steps=steps,
        mean_episode_reward=float(rewards.mean()),
        precision=negatives_selected / selected if has_truth and selected else float("nan"),
        recall=negatives_selected / negatives_shown if has_truth and negatives_shown else float("nan"),
        invalid_rate=invalid / steps,
        steps_per_second=steps / elapsed if elapsed > 0 else float("inf"),
    )
