"""The offline learning loop of :class:`~agents.dqn.RefinementDQN` on a single or a batched env."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from torch import Tensor

from agents.qnets import rows_present


class LearningAgent(Protocol):
    """What the loop uses of its agent (:class:`~agents.dqn.RefinementDQN` has it).

    A protocol rather than the class: agents.dqn imports this module (on ``learn``), so importing
    it back, even for annotations only, would make the two a cycle.
    """

    env: Any
    seed: int | None
    device: torch.device
    num_timesteps: int
    hyperparameters: dict[str, Any]
    replay: Any
    logger: Any
    updates: int
    exploration_rate: float
    last_obs: Any
    """The env's current observation (batched: the obs; single env: ``(obs, info)``); None: reset first."""

    def act(
        self, obs: Tensor, mask: Tensor | None = None, deterministic: bool = False, count: bool = True
    ) -> Tensor: ...

    def observe(
        self,
        obs: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_obs: Tensor | None,
        dones: Tensor,
        masks: Tensor,
        obs_masks: Tensor | None = None,
    ) -> None: ...

    def observe_indexed(
        self, index: Tensor, obs_masks: Tensor, actions: Tensor, rewards: Tensor, masks: Tensor, dones: Tensor
    ) -> None: ...

    def update(self, optimize: bool = True) -> Tensor: ...


AgentT = TypeVar("AgentT", bound=LearningAgent)


def as_sb3_callback(agent: Any, callback: Any) -> BaseCallback | None:
    """SB3 callbacks, lists of them, or a function ``f(locals, globals) -> bool``, initialised on ``agent``."""
    if callback is None:
        return None
    if isinstance(callback, list):
        callback = CallbackList(callback)
    elif not isinstance(callback, BaseCallback):
        if not callable(callback):
            raise TypeError(
                f"callback must be an SB3 BaseCallback, a list of them or a callable, got {type(callback).__name__}"
            )
        callback = ConvertCallback(callback)
    callback.init_callback(agent)
    return callback


# RefinementDQN's default train_freq on a single env: each stored transition is sampled this many
# times on average (chosen with benchmarks/agent_defaults.py on training seeds 10-12).
SINGLE_ENV_REPLAY_RATIO = 16
# SB3's stats_window_size: rollout/* means are over the last 100 finished episodes.
STATS_WINDOW = 100


class RolloutLog:
    """What SB3's DQN logs (``rollout/``, ``train/``, ``time/``), plus the selection precision.

    Sums stay on the agent's device between dumps, so logging costs no host sync per step; a
    disabled log (a logger without outputs) records nothing and costs nothing.
    """

    def __init__(self, agent: LearningAgent, log_interval: int) -> None:
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        self.agent, self.log_interval = agent, log_interval
        self.enabled = bool(getattr(agent.logger, "output_formats", None))
        self.start_time, self.start_steps = time.time_ns(), agent.num_timesteps
        self.episodes = self._episodes_at_dump = 0
        self.has_truth = False  # the env reports planted negatives: log the selection precision
        self._dumped_at = agent.num_timesteps
        dev = agent.device
        self._loss_sum, self._loss_count = torch.zeros((), device=dev), 0
        self._ret: Tensor | None = None  # per sub-environment: return, length, valid selections, negatives
        self._window = torch.zeros((0, 4), device=dev)  # finished episodes, same columns

    def on_update(self, loss: Tensor) -> None:
        if self.enabled:
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_count += 1

    def on_step(self, rewards: Tensor, stepping: Tensor, dones: Tensor, infos: dict[str, Any]) -> None:
        """One vector step: ``[B]`` rewards, stepping and done flags; ``infos`` with ``invalid_action`` and maybe ``is_negative``."""
        if not self.enabled:
            return
        valid = stepping & ~infos["invalid_action"]
        self.has_truth = self.has_truth or "is_negative" in infos
        negative = infos["is_negative"] & valid if "is_negative" in infos else torch.zeros_like(valid)
        step = torch.stack([rewards.float() * stepping, stepping.float(), valid.float(), negative.float()], dim=1)
        self._ret = step if self._ret is None else self._ret + step
        finished = (dones & stepping).nonzero().squeeze(-1)
        if finished.numel():
            self._window = torch.cat([self._window, self._ret[finished]])[-STATS_WINDOW:]
            self._ret[finished] = 0.0
            self.episodes += int(finished.numel())
            if self.episodes - self._episodes_at_dump >= self.log_interval:
                self.dump()

    def dump(self) -> None:
        agent, logger = self.agent, self.agent.logger
        if not self.enabled or agent.num_timesteps == self._dumped_at:
            return
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        logger.record("rollout/exploration_rate", agent.exploration_rate)
        if self._window.shape[0]:
            ret, length, valid, negative = self._window.sum(0).tolist()
            n = self._window.shape[0]
            logger.record("rollout/ep_rew_mean", ret / n)
            logger.record("rollout/ep_len_mean", length / n)
            if self.has_truth and valid > 0:
                logger.record("rollout/selection_precision", negative / valid)
        logger.record("time/episodes", self.episodes, exclude="tensorboard")
        logger.record("time/fps", int((agent.num_timesteps - self.start_steps) / elapsed))
        logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        logger.record("time/total_timesteps", agent.num_timesteps, exclude="tensorboard")
        if self._loss_count:
            logger.record("train/loss", float(self._loss_sum) / self._loss_count)
            self._loss_sum, self._loss_count = torch.zeros_like(self._loss_sum), 0
        logger.record("train/learning_rate", agent.hyperparameters["learning_rate"])
        logger.record("train/n_updates", agent.updates, exclude="tensorboard")
        logger.dump(step=agent.num_timesteps)
        self._dumped_at, self._episodes_at_dump = agent.num_timesteps, self.episodes


def run_learning_loop(
    agent: AgentT,
    total_timesteps: int,
    callback: Any,
    progress_bar: bool,
    reset_num_timesteps: bool,
    log_interval: int = 100,
) -> AgentT:
    """Step ``agent.env`` for ``total_timesteps`` env steps, storing transitions and updating every ``train_freq`` steps."""
    from mmir_env.batched import BatchedRefinementEnv

    if total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
    log = RolloutLog(agent, log_interval)
    cb = as_sb3_callback(agent, callback)
    if reset_num_timesteps:
        agent.num_timesteps = 0
        agent.last_obs = None
    target = agent.num_timesteps + total_timesteps
    batched = isinstance(getattr(agent.env, "unwrapped", agent.env), BatchedRefinementEnv)
    if cb is not None:
        cb.on_training_start(locals(), globals())
    bar = _progress(progress_bar, total_timesteps)
    with bar if bar is not None else nullcontext():
        task = bar.add_task("mmir-dqn", total=total_timesteps) if bar is not None else None
        step_fn = _batched_step if batched else _single_step
        train_freq = agent.hyperparameters["train_freq"] or _default_train_freq(agent, batched)
        vec_steps = 0
        start = agent.num_timesteps
        while agent.num_timesteps < target:
            step_fn(agent, log)
            vec_steps += 1
            if vec_steps % train_freq == 0:
                for _ in range(agent.hyperparameters["gradient_steps"]):
                    before = agent.updates
                    loss = agent.update()
                    if agent.updates != before:
                        log.on_update(loss)
            if bar is not None:
                bar.update(task, completed=min(total_timesteps, agent.num_timesteps - start))
            if cb is not None:
                cb.update_locals(locals())
                if not cb.on_step():
                    break
    log.dump()
    if cb is not None:
        cb.on_training_end()
    return agent


def _default_train_freq(agent: LearningAgent, batched: bool) -> int:
    """``train_freq=None``: each vector step on a batched env; on a single env, a replay ratio of
    :data:`SINGLE_ENV_REPLAY_RATIO` (``batch_size // 16`` env steps per update)."""
    if batched:
        return 1
    return max(1, agent.hyperparameters["batch_size"] // SINGLE_ENV_REPLAY_RATIO)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def _batched_step(agent: LearningAgent, log: RolloutLog) -> None:
    env = agent.env.unwrapped if hasattr(agent.env, "unwrapped") else agent.env
    if agent.last_obs is None:
        agent.last_obs, _ = env.reset(seed=agent.seed)
    obs = agent.last_obs
    stepping = ~env.needs_reset
    mask = env.mask.clone()
    index = env.candidate_index.clone() if agent.replay.indexed else None
    actions = agent.act(obs, mask)
    stored_obs = None if index is not None else obs.clone()  # the env may overwrite obs in place
    next_obs, rewards, terminated, truncated, infos = env.step(actions)
    dones = terminated | truncated
    next_mask = infos["action_mask"]
    if "final_info" in infos:  # SAME_STEP: terminal masks of the sets that were reset
        next_mask = torch.where(infos["_final_info"].unsqueeze(-1), infos["final_info"]["action_mask"], next_mask)
    keep = stepping.nonzero().squeeze(-1) if not bool(stepping.all()) else None
    fields = (index if index is not None else stored_obs, mask, actions, rewards, next_mask, dones)
    if keep is not None:  # NEXT_STEP reset steps are not transitions
        fields = tuple(f[keep] for f in fields)
    if index is not None:
        agent.observe_indexed(*fields)
    else:
        s, m, a, r, nm, d = fields
        agent.observe(s, a, r, None, d, nm, obs_masks=m)
    agent.num_timesteps += int(stepping.sum())
    if log.enabled:
        log.on_step(rewards, stepping, dones, infos)
    if env.autoreset_mode.value == "Disabled" and bool(env.needs_reset.all()):
        next_obs, _ = env.reset()
    agent.last_obs = next_obs


def _single_step(agent: LearningAgent, log: RolloutLog) -> None:
    env = agent.env
    if agent.last_obs is None:
        agent.last_obs = env.reset(seed=agent.seed)
    obs, info = agent.last_obs
    obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device).unsqueeze(0)
    mask = info.get("action_mask")
    mask_t = rows_present(obs_t) if mask is None else torch.as_tensor(mask, device=agent.device).unsqueeze(0)
    action = agent.act(obs_t, mask_t)
    next_obs, reward, terminated, truncated, next_info = env.step(int(action[0]))
    done = bool(terminated or truncated)
    next_mask = next_info.get("action_mask")
    next_mask_t = (
        rows_present(torch.as_tensor(np.asarray(next_obs, dtype=np.float32))).unsqueeze(0)
        if next_mask is None
        else torch.as_tensor(next_mask).unsqueeze(0)
    )
    agent.observe(obs_t, action, torch.tensor([reward]), None, torch.tensor([done]), next_mask_t, obs_masks=mask_t)
    agent.num_timesteps += 1
    if log.enabled:
        flags = {"invalid_action": torch.tensor([bool(next_info.get("invalid_action", False))], device=agent.device)}
        if "is_negative" in next_info:
            flags["is_negative"] = torch.tensor([bool(next_info["is_negative"])], device=agent.device)
        one = torch.ones(1, dtype=torch.bool, device=agent.device)
        log.on_step(torch.tensor([float(reward)], device=agent.device), one, one & done, flags)
    agent.last_obs = env.reset() if done else (next_obs, next_info)
