"""RefinementDQN: deep Q-learning for instance refinement with Stable-Baselines3's surface."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from agents.exploration import ConstantEpsilon, ExponentialEpsilon, LinearEpsilon, make_schedule
from agents.qnets import Q_NETWORKS, masked_q, rows_present
from agents.replay import ReplayBuffer, ReplaySample
from features.atomic_io import atomic_torch_save  # also imported from here by experiments.cotrain
from features.devices import resolve_device

SAVE_FORMAT = "mmir-dqn"
SAVE_VERSION = 1
_SCHEDULES = {cls.__name__: cls for cls in (ConstantEpsilon, LinearEpsilon, ExponentialEpsilon)}


def configured_logger(verbose: int, tensorboard_log: str | None, tb_log_name: str, reset_num_timesteps: bool) -> Any:
    """SB3's ``configure_logger`` (run folders ``NAME_1``, ``NAME_2``, ...), with an install hint for TensorBoard."""
    from stable_baselines3.common import logger as sb3_logger
    from stable_baselines3.common.utils import configure_logger

    if tensorboard_log is not None and sb3_logger.SummaryWriter is None:
        raise ImportError('tensorboard_log needs the tensorboard package: pip install "mmir[tensorboard]"')
    return configure_logger(verbose, tensorboard_log, tb_log_name, reset_num_timesteps)


def candidate_set_shape(space: gym.Space) -> tuple[int, int]:
    """``(n_c, d)`` of a candidate-set observation space, or a ValueError saying what was expected."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 2:
        raise ValueError(f"expected a candidate-set observation space Box(shape=(n_c, d)), got {space!r}")
    return int(space.shape[0]), int(space.shape[1])


class RefinementDQN:
    """DQN agent that selects negative samples out of candidate sets (paper eq. 2, 5-7, 10).

    Mnih et al. (2015) with experience replay (Lin, 1992) and a target network; masked
    epsilon-greedy so that removed rows are never chosen; TD targets take their max over the next
    state's selectable rows only. Offline it owns the loop (``learn``); in co-training the outer
    loop drives it with ``act`` / ``observe`` / ``update`` and adds the returned loss to eq. 9.

    :param env: an :class:`~mmir_env.InstanceRefinementEnv` (or wrapper) or a
        :class:`~mmir_env.batched.BatchedRefinementEnv`; None when driven step-wise (then give
        ``n_c`` and ``feature_dim``).
    :param q_net: "set" (:class:`~agents.qnets.CandidateSetQNet`, default) or "flat"
        (:class:`~agents.qnets.FlatQNet`, the released code's).
    :param q_net_kwargs: keyword arguments of the Q-network.
    :param learning_rate: Adam's step size (paper stage 2: 1e-3).
    :param gamma: discount (paper 4.1: 0.9).
    :param epsilon: exploration: a float (constant; paper 4.1: 0.5), "released" (0.01 + 0.89
        exp(-c/24000), the authors' code), a :class:`~agents.exploration.LinearEpsilon`, or any
        callable of the selection count c.
    :param buffer_size: replay capacity in transitions (not SB3's 1e6: 5x1024 states would need 41 GB).
    :param batch_size: minibatch of each gradient step.
    :param learning_starts: transitions stored before the first update (default: ``batch_size``).
    :param train_freq: env steps (vector steps for a batched env) between updates. Default None:
        every vector step on a batched env; on a single env every ``batch_size // 16`` steps, so that
        each stored transition is replayed ~16 times (SB3 DQN's defaults: 8). One update per step
        of 256 replayed each transition 256 times, which fitted the reward noise: 0.57 precision
        after 20,000 steps against the oracle's 0.735 (``benchmarks/agent_defaults.py``).
    :param gradient_steps: gradient steps per update.
    :param target_update_interval: selections between hard target-network copies.
    :param loss: "mse" (eq. 6, default) or "huber".
    :param max_grad_norm: clip the Q-network's gradient norm to this (None: no clipping).
    :param weight_decay: Adam weight decay (paper: 1e-7).
    :param replay_dtype: storage dtype of replayed features (float16 halves memory).
    :param device: "auto" (CUDA when present), "cpu", "cuda", ...
    :param seed: seeds the network initialisation, exploration and replay sampling.
    :param tensorboard_log: folder for TensorBoard event files (SB3's argument: each ``learn`` writes
        ``tensorboard_log/<tb_log_name>_<k>``; needs ``pip install "mmir[tensorboard]"``).
    :param verbose: 1 also prints the logged table at each dump (SB3's convention).

    ``last_obs`` holds the env's current observation between ``learn`` calls (SB3's ``_last_obs``:
    batched env: the observation; single env: ``(obs, info)``); ``learn`` keeps it, None resets the
    env on the next step.
    """

    def __init__(
        self,
        env: Any = None,
        q_net: str = "set",
        q_net_kwargs: dict[str, Any] | None = None,
        learning_rate: float = 1e-3,
        gamma: float = 0.9,
        epsilon: float | str | Callable[[int], float] = 0.5,
        buffer_size: int = 10_000,
        batch_size: int = 256,
        learning_starts: int | None = None,
        train_freq: int | None = None,
        gradient_steps: int = 1,
        target_update_interval: int = 2_000,
        loss: str = "mse",
        max_grad_norm: float | None = None,
        weight_decay: float = 1e-7,
        replay_dtype: str = "float32",
        n_c: int | None = None,
        feature_dim: int | None = None,
        device: str | torch.device = "auto",
        seed: int | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
        verbose: int = 0,
    ) -> None:
        if q_net not in Q_NETWORKS:
            raise ValueError(f"q_net must be one of {sorted(Q_NETWORKS)}, got {q_net!r}")
        if loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {loss!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if replay_dtype not in ("float32", "float16"):
            raise ValueError(f"replay_dtype must be 'float32' or 'float16', got {replay_dtype!r}")
        for name, value in (
            ("buffer_size", buffer_size),
            ("batch_size", batch_size),
            ("train_freq", 1 if train_freq is None else train_freq),
            ("gradient_steps", gradient_steps),
            ("target_update_interval", target_update_interval),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.env = env
        if env is not None:
            space = getattr(env, "single_observation_space", None) or env.observation_space
            env_n_c, env_d = candidate_set_shape(space)
            if (n_c, feature_dim) != (None, None) and (n_c, feature_dim) != (env_n_c, env_d):
                raise ValueError(f"n_c/feature_dim ({n_c}, {feature_dim}) disagree with the env's ({env_n_c}, {env_d})")
            n_c, feature_dim = env_n_c, env_d
        if n_c is None or feature_dim is None:
            raise ValueError("without an env, pass n_c and feature_dim")
        self.n_c, self.feature_dim = int(n_c), int(feature_dim)
        env_device = getattr(getattr(env, "unwrapped", env), "device", None) if env is not None else None
        self.device = (
            torch.device(env_device) if (str(device) == "auto" and env_device is not None) else resolve_device(device)
        )
        self.epsilon_spec = epsilon
        self.exploration = make_schedule(epsilon)
        self.hyperparameters: dict[str, Any] = dict(
            q_net=q_net,
            q_net_kwargs=dict(q_net_kwargs or {}),
            learning_rate=learning_rate,
            gamma=gamma,
            buffer_size=int(buffer_size),
            batch_size=int(batch_size),
            learning_starts=int(batch_size if learning_starts is None else learning_starts),
            train_freq=None if train_freq is None else int(train_freq),
            gradient_steps=int(gradient_steps),
            target_update_interval=int(target_update_interval),
            loss=loss,
            max_grad_norm=max_grad_norm,
            weight_decay=weight_decay,
            replay_dtype=replay_dtype,
            n_c=self.n_c,
            feature_dim=self.feature_dim,
            seed=seed,
        )
        self.gamma, self.batch_size, self.seed = float(gamma), int(batch_size), seed
        self.learning_starts = self.hyperparameters["learning_starts"]
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.q_net = Q_NETWORKS[q_net](self.feature_dim, self.n_c, **(q_net_kwargs or {})).to(self.device)
        self.q_net_target = Q_NETWORKS[q_net](self.feature_dim, self.n_c, **(q_net_kwargs or {})).to(self.device)
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.requires_grad_(False)
        # fused: one kernel per step for all Q-network tensors (the nets are small; dispatch dominates;
        # measured 65 vs 202 us per step against foreach on CPU)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.q_net.parameters(),
            lr=learning_rate,
            weight_decay=weight_decay,
            fused=fused,
            foreach=None if fused else True,
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        self.replay = self._make_replay()
        self.num_timesteps = 0  # env steps summed over sub-environments (SB3's convention)
        self.selections = 0  # the selection count c of the epsilon schedules
        self.updates = 0
        self._last_sync = 0
        # public: agents.training_loop, which runs learn() outside this class, reads and writes it
        self.last_obs: Any = None
        # (obs, mask, actions) -> rewards: re-scores replayed transitions at update time (co-training's
        # reward relabelling: a reward measured against an older discriminator goes stale)
        self.reward_relabel: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
        from stable_baselines3.common.logger import Logger

        self.logger = Logger(folder=None, output_formats=[])
        self.tensorboard_log = None if tensorboard_log is None else os.fspath(tensorboard_log)
        self.verbose = int(verbose)
        self._custom_logger = False

    # -- construction helpers -------------------------------------------------------------------
    def _make_replay(self) -> ReplayBuffer:
        pool = None
        base = getattr(self.env, "unwrapped", self.env)
        if base is not None and getattr(base, "pool", None) is not None and hasattr(base, "candidate_index"):
            pool = base.pool  # a fixed pool: store pool rows, not features
        return ReplayBuffer(
            self.hyperparameters["buffer_size"],
            self.n_c,
            self.feature_dim,
            device=self.device,
            pool=pool,
            dtype=getattr(torch, self.hyperparameters["replay_dtype"]),
        )

    def get_env(self) -> Any:
        return self.env

    def parameters(self) -> list[nn.Parameter]:
        """The online Q-network's parameters (for an outer optimizer, if the caller prefers one)."""
        return list(self.q_net.parameters())

    @property
    def exploration_rate(self) -> float:
        """Epsilon at the current selection count."""
        return float(self.exploration(self.selections))

    # -- step-wise API (co-training) ------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, mask: Tensor | None = None, deterministic: bool = False, count: bool = True) -> Tensor:
        """Masked epsilon-greedy actions ``[B]`` for ``obs: [B, n_c, d]`` (eq. 10); counts selections."""
        obs = obs.to(self.device, torch.float32)
        mask = rows_present(obs) if mask is None else mask.to(self.device, torch.bool)
        explore, random_actions = self.exploration_draws(mask, deterministic)
        if bool(explore.all()):  # no greedy set: no Q forward
            actions = random_actions
        else:
            # Q for every set, then a select: cheaper than gathering the greedy subset at these sizes.
            greedy_actions = masked_q(self.q_net(obs, mask), mask).argmax(dim=-1)
            actions = torch.where(explore, random_actions, greedy_actions)
        if count:
            self.selections += obs.shape[0]
        return actions

    def exploration_draws(self, mask: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """``(explore [B] bool, random actions [B])`` of one masked epsilon-greedy selection, drawn from this agent's generator.

        :meth:`act` and :class:`~agents.grouped.AgentGroup` draw through here, so that acting alone
        or in a group consumes the same random numbers.
        """
        b = mask.shape[0]
        eps = 0.0 if deterministic else self.exploration_rate
        explore = torch.rand(b, generator=self.generator, device=self.device) < eps
        keys = torch.rand((b, self.n_c), generator=self.generator, device=self.device).masked_fill(~mask, -1.0)
        return explore, keys.argmax(dim=-1)  # uniform among selectable rows

    def observe(
        self,
        obs: Tensor,
        actions: Tensor,
        rewards: Tensor,
        next_obs: Tensor | None,
        dones: Tensor,
        masks: Tensor,
        obs_masks: Tensor | None = None,
    ) -> None:
        """Store transitions. ``masks`` are the next states' selectable rows.

        The next state is rebuilt as ``obs * masks`` (the MDP's transition: the selected row is
        zeroed), so ``next_obs`` is not stored; this also makes a SAME_STEP autoreset harmless.
        ``obs_masks`` default to the non-zero rows of ``obs``.
        """
        obs = torch.as_tensor(obs, device=self.device, dtype=torch.float32)
        if tuple(obs.shape[1:]) != (self.n_c, self.feature_dim):
            raise ValueError(f"obs must be [B, n_c={self.n_c}, d={self.feature_dim}], got {tuple(obs.shape)}")
        if self.replay.indexed:
            raise RuntimeError("this agent's replay stores pool rows: use observe_indexed()")
        obs_masks = rows_present(obs) if obs_masks is None else torch.as_tensor(obs_masks, device=self.device)
        self.replay.add(
            obs,
            obs_masks,
            torch.as_tensor(actions),
            torch.as_tensor(rewards),
            torch.as_tensor(masks),
            torch.as_tensor(dones),
        )

    def observe_indexed(
        self, index: Tensor, obs_masks: Tensor, actions: Tensor, rewards: Tensor, masks: Tensor, dones: Tensor
    ) -> None:
        """Store transitions whose states are pool rows ``index: [B, n_c]`` (fixed-pool replay)."""
        self.replay.add(index, obs_masks, actions, rewards, masks, dones)

    def td_loss(self) -> Tensor:
        """Eq. 5-6 on a replay minibatch (attached to the Q-network's graph)."""
        batch, target = self.td_batch()
        return self.td_error(self.q_net(batch.obs, batch.mask), batch.actions, target)

    def td_batch(self) -> tuple[ReplaySample, Tensor]:
        """A replay minibatch drawn from this agent's generator and its TD targets ``y`` (eq. 5, no gradient)."""
        batch = self.replay.sample(self.batch_size, self.replay_generator())
        return batch, self.td_target(batch)

    def replay_generator(self) -> torch.Generator | None:
        """The generator replay minibatches draw from: the agent's own on the CPU (else the global one)."""
        return self.generator if self.device.type == "cpu" else None

    @torch.no_grad()
    def td_target(self, batch: ReplaySample) -> Tensor:
        """Eq. 5's targets ``y [B]`` of a replay minibatch: its rewards (re-scored when ``reward_relabel`` is set),
        plus the discounted target network's value of the next states that have not ended."""
        target = (
            batch.rewards
            if self.reward_relabel is None
            else self.reward_relabel(batch.obs, batch.mask, batch.actions).float()
        )
        # with E = 1 every transition is terminal (y = r): one check, no target network forward
        if self.gamma > 0 and not bool(batch.dones.all()):
            bootstrap = (~batch.dones) & batch.next_mask.any(dim=1)
            next_mask = batch.next_mask
            next_q = masked_q(self.q_net_target(batch.next_obs, next_mask), next_mask).amax(dim=1)
            target = target + self.gamma * torch.where(bootstrap, next_q, torch.zeros_like(next_q))
        return target

    def td_error(self, q: Tensor, actions: Tensor, target: Tensor) -> Tensor:
        """Eq. 6: the loss between the Q-values ``q [B, n_c]`` of the taken ``actions`` and the targets."""
        taken = q.gather(1, actions.unsqueeze(1)).squeeze(1)
        if self.hyperparameters["loss"] == "huber":
            return F.smooth_l1_loss(taken, target)
        return F.mse_loss(taken, target)

    def td_errors(self, q: Tensor, actions: Tensor, targets: Tensor) -> Tensor:
        """Eq. 6 for a stack of minibatches (an :class:`~agents.grouped.AgentGroup`'s): ``q [G, B, n_c]``,
        ``actions`` and ``targets`` ``[G, B]`` -> ``[G]``, each the mean over its ``B`` as :meth:`td_error`."""
        taken = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        loss = F.smooth_l1_loss if self.hyperparameters["loss"] == "huber" else F.mse_loss
        return loss(taken, targets, reduction="none").mean(-1)

    def update(self, optimize: bool = True) -> Tensor:
        """One gradient step's TD loss (eq. 6); zero while fewer than ``learning_starts`` transitions are stored.

        ``optimize=True``: backward, clip, step this agent's Adam, sync the target; returns the loss detached.
        ``optimize=False``: returns the loss attached to the graph for the caller's total loss
        (eq. 7/9); call :meth:`optimizer_step` after the caller's backward.
        """
        if len(self.replay) < max(self.learning_starts, 1):
            return torch.zeros((), device=self.device)
        loss = self.td_loss()
        if not optimize:
            return loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_step()
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip, step the Q-network's optimizer and copy to the target network when due."""
        max_norm = self.hyperparameters["max_grad_norm"]
        if max_norm is not None:
            nn.utils.clip_grad_norm_(self.q_net.parameters(), max_norm)
        self.optimizer.step()
        self.count_update()

    def count_update(self) -> None:
        """What follows each optimizer step: count the update, copy to the target network when due
        (:class:`~agents.grouped.AgentGroup` steps several agents' optimizers at once, then calls this)."""
        self.updates += 1
        if self.selections - self._last_sync >= self.hyperparameters["target_update_interval"]:
            self.q_net_target.load_state_dict(self.q_net.state_dict())
            self._last_sync = self.selections

    # -- SB3 surface ----------------------------------------------------------------------------
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        action_masks: Any = None,
    ) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: actions for ``[n_c, d]`` (a 0-d array) or ``[B, n_c, d]`` observations."""
        obs = torch.as_tensor(
            np.asarray(observation, dtype=np.float32) if not isinstance(observation, Tensor) else observation
        )
        single = obs.ndim == 2
        if single:
            obs = obs.unsqueeze(0)
        if tuple(obs.shape[1:]) != (self.n_c, self.feature_dim):
            raise ValueError(
                f"observation must be [n_c={self.n_c}, d={self.feature_dim}] or a batch of them, got {tuple(obs.shape)}"
            )
        mask = (
            None
            if action_masks is None
            else torch.as_tensor(np.asarray(action_masks, dtype=bool)).reshape(obs.shape[:2])
        )
        actions = self.act(obs, mask, deterministic=deterministic, count=False).cpu().numpy()
        return (actions[0] if single else actions), None

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 100,
        tb_log_name: str = "RefinementDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> RefinementDQN:
        """Train on ``self.env`` for ``total_timesteps`` env steps (summed over sub-environments).

        SB3's signature. The logger is dumped every ``log_interval`` finished episodes (SB3 DQN's
        default 4 would dump every 4 steps of these one-step episodes) and once at the end.
        """
        from agents.training_loop import run_learning_loop

        if self.env is None:
            raise ValueError("learn() needs an env: RefinementDQN(env, ...) or model.set_env(env)")
        if not self._custom_logger and (self.tensorboard_log is not None or self.verbose >= 1):
            self.logger = configured_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        return run_learning_loop(
            self, int(total_timesteps), callback, progress_bar, reset_num_timesteps, int(log_interval)
        )

    def set_logger(self, logger: Any) -> None:
        """Use an SB3 ``Logger`` (``stable_baselines3.common.logger.configure``) instead of the one ``learn`` would make."""
        self.logger = logger
        self._custom_logger = True

    def set_env(self, env: Any) -> None:
        """Attach an env with the same candidate-set shape (as SB3's ``set_env``)."""
        space = getattr(env, "single_observation_space", None) or env.observation_space
        shape = candidate_set_shape(space)
        if shape != (self.n_c, self.feature_dim):
            raise ValueError(
                f"this agent was built for n_c={self.n_c}, d={self.feature_dim}; the env has n_c={shape[0]}, d={shape[1]}"
            )
        self.env = env
        if self.replay.indexed or getattr(getattr(env, "unwrapped", env), "pool", None) is not None:
            self.replay = self._make_replay()
        self.last_obs = None

    def state_dict(self, include_replay: bool = False) -> dict[str, Any]:
        """Everything needed to continue training bit-for-bit (tensors and JSON strings only)."""
        schedule = self.exploration
        if dataclasses.is_dataclass(schedule) and type(schedule).__name__ in _SCHEDULES:
            epsilon = {"schedule": type(schedule).__name__, **dataclasses.asdict(schedule)}
        else:
            epsilon = None  # a custom callable: pass epsilon= again to load()
        return {
            "format": SAVE_FORMAT,
            "version": SAVE_VERSION,
            "hyperparameters": json.dumps(self.hyperparameters),
            "epsilon": json.dumps(epsilon),
            "q_net": self.q_net.state_dict(),
            "q_net_target": self.q_net_target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": torch.tensor(
                [self.num_timesteps, self.selections, self.updates, self._last_sync], dtype=torch.int64
            ),
            "generator": self.generator.get_state(),
            "replay": self.replay.state_dict() if include_replay and not self.replay.indexed else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same architecture)."""
        self.q_net.load_state_dict(state["q_net"])
        self.q_net_target.load_state_dict(state["q_net_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_timesteps, self.selections, self.updates, self._last_sync = (int(v) for v in state["counters"])
        if self.device.type == "cpu":
            self.generator.set_state(state["generator"])
        if state.get("replay") is not None and not self.replay.indexed:
            self.replay.load_state_dict(state["replay"])

    def save(self, path: str | os.PathLike[str], include_replay: bool = False) -> None:
        """Write networks, optimizer, counters, RNG state and hyperparameters (atomic; ``torch.load(weights_only=True)``)."""
        atomic_torch_save(self.state_dict(include_replay), Path(path))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], env: Any = None, device: str | torch.device = "auto", **overrides: Any
    ) -> RefinementDQN:
        """Rebuild an agent saved with :meth:`save`; checks that ``env`` has the saved ``n_c`` and ``d``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved agent at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for non-checkpoint files
            raise ValueError(f"{path} is not a RefinementDQN file readable with weights_only=True: {err}") from err
        if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
            raise ValueError(
                f"{path} is not a RefinementDQN file (format key {state.get('format') if isinstance(state, dict) else None!r})"
            )
        if state.get("version") != SAVE_VERSION:
            raise ValueError(
                f"{path} has RefinementDQN format version {state.get('version')}; this mmir reads version {SAVE_VERSION}"
            )
        hp = json.loads(state["hyperparameters"])
        if env is not None:
            space = getattr(env, "single_observation_space", None) or env.observation_space
            n_c, d = candidate_set_shape(space)
            if (n_c, d) != (hp["n_c"], hp["feature_dim"]):
                raise ValueError(
                    f"{path} was saved for candidate sets of n_c={hp['n_c']}, d={hp['feature_dim']}; "
                    f"the env has n_c={n_c}, d={d}"
                )
        epsilon = json.loads(state["epsilon"])
        if "epsilon" not in overrides and epsilon is not None:
            overrides["epsilon"] = _SCHEDULES[epsilon.pop("schedule")](**epsilon)
        kwargs = {**hp, **overrides}
        agent = cls(env=env, device=device, **kwargs) if env is not None else cls(device=device, **kwargs)
        agent.load_state_dict(state)
        return agent
