"""Offline agent studies: run an agent on an instance-refinement env and measure its selections."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

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


@dataclass(frozen=True)
class StudyResult:
    """One (agent, domain, seed) run of a study: training cost and greedy selection quality."""

    agent: str
    domain: str
    seed: int
    train_timesteps: int
    train_seconds: float
    train_steps_per_second: float
    stats: SelectionStats

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stats"] = self.stats.as_dict()
        return out


def progress_callback(update: Callable[[int], None]) -> Any:
    """An SB3 callback that reports the number of env steps done so far (works with RefinementDQN too)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self._start = self.model.num_timesteps

        def _on_step(self) -> bool:
            update(self.model.num_timesteps - self._start)
            return True

    return _Progress()


def train_and_evaluate(
    name: str,
    source: Any,
    domain: str,
    seed: int,
    timesteps: int,
    episodes: int,
    env_kwargs: dict[str, Any],
    num_envs: int = 1024,
    agent_kwargs: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Any, StudyResult]:
    """Train agent ``name`` on ``source`` for ``timesteps`` env steps, then evaluate it greedily.

    ``mmir-dqn`` trains on a :class:`~mmir_env.batched.BatchedRefinementEnv` of ``num_envs`` sets;
    other algorithms on the single environment. Evaluation always runs ``episodes`` episodes of the
    single environment with a seed disjoint from training's.
    """
    from agents.registry import make_agent
    from mmir_env.batched import BatchedRefinementEnv
    from mmir_env.env import InstanceRefinementEnv

    eval_env = InstanceRefinementEnv(source, domain=domain, **env_kwargs)
    if name == "mmir-dqn":
        train_env: Any = BatchedRefinementEnv(
            source, num_envs=num_envs, domain=domain, copy=False, include_final_obs=False, **env_kwargs
        )
    else:
        train_env = InstanceRefinementEnv(source, domain=domain, **env_kwargs)
    agent = make_agent(name, train_env, seed=seed, **(agent_kwargs or {}))
    trained = 0
    start = time.perf_counter()
    if timesteps > 0 and name not in ("random", "oracle"):
        callback = progress_callback(on_progress) if on_progress is not None else None
        agent.learn(total_timesteps=timesteps, callback=callback)
        trained = int(agent.num_timesteps)
    seconds = time.perf_counter() - start
    stats = evaluate_selection(agent, eval_env, episodes, seed=10_000 + seed, deterministic=True)
    return agent, StudyResult(
        agent=name,
        domain=domain,
        seed=seed,
        train_timesteps=trained,
        train_seconds=seconds,
        train_steps_per_second=trained / seconds if trained and seconds > 0 else float("nan"),
        stats=stats,
    )


def summarize(results: list[StudyResult]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (agent, domain), in first-seen order."""
    groups: dict[tuple[str, str], list[StudyResult]] = {}
    for r in results:
        groups.setdefault((r.agent, r.domain), []).append(r)
    rows = []
    for (agent, domain), runs in groups.items():

        def ms(values: list[float]) -> tuple[float, float]:
            arr = np.asarray(values, dtype=float)
            return float(np.mean(arr)), float(np.std(arr))

        rows.append(
            {
                "agent": agent,
                "domain": domain,
                "seeds": len(runs),
                "reward": ms([r.stats.mean_episode_reward for r in runs]),
                "precision": ms([r.stats.precision for r in runs]),
                "recall": ms([r.stats.recall for r in runs]),
                "invalid_rate": ms([r.stats.invalid_rate for r in runs]),
                "train_steps_per_second": ms([r.train_steps_per_second for r in runs]),
                "train_seconds": ms([r.train_seconds for r in runs]),
            }
        )
    return rows
