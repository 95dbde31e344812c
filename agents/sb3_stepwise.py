"""Step-wise adapters over Stable-Baselines3's DQN and sb3-contrib's QR-DQN, for co-training.

The SB3 model supplies the policy network (:class:`~agents.sb3_adapters.CandidateSetExtractor` and
an MLP head, as ``make_agent("dqn", env)`` builds it), the replay buffer class and ``train()``, the
gradient step with SB3's own loss and optimizer. The adapter owns what SB3 does in its rollout loop:
masked epsilon-greedy selection, storing transitions, and target-network syncs counted in
selections. Both adapters train themselves (``joint_loss = False``): call ``update()``.

TD targets are SB3's: ``r + gamma (1 - done) max_a' Q_target(s', a')`` over *all* next actions
(SB3 knows no action masks). With ``E = 1`` every transition is terminal, so the target is the
reward and the missing mask does not matter; with ``E > 1`` the max may pick an already removed
(zeroed) row.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from agents.exploration import make_schedule
from agents.qnets import rows_present
from features.devices import resolve_device

SAVE_FORMAT = "mmir-sb3-stepwise"
SAVE_VERSION = 1
LOSS_KEY = "train/loss"  # what DQN.train / QRDQN.train record (mean over the gradient steps)


class CandidateSetSpaces(gym.Env):
    """Declares the candidate-set spaces to SB3 (``Box(n_c, d)``, ``Discrete(n_c)``); never reset or stepped."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_c: int, feature_dim: int) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_c, feature_dim), np.float32)
        self.action_space = gym.spaces.Discrete(n_c)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        raise RuntimeError("CandidateSetSpaces only declares spaces: a step-wise agent is driven by act/observe/update")

    def step(self, action: Any) -> Any:
        raise RuntimeError("CandidateSetSpaces only declares spaces: a step-wise agent is driven by act/observe/update")


@contextlib.contextmanager
def _numpy_global_rng(rng: np.random.RandomState) -> Iterator[None]:
    """Run with ``rng`` as numpy's global RNG (SB3's buffers sample with ``np.random``), then put both back."""
    saved = np.random.get_state()
    np.random.set_state(rng.get_state())
    try:
        yield
    finally:
        rng.set_state(np.random.get_state())
        np.random.set_state(saved)


def _numpy(t: Tensor | np.ndarray, dtype: Any) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype)


class SB3StepwiseAgent:
    """Shared base of :class:`SB3StepwiseDQN` and :class:`SB3StepwiseQRDQN` (the :class:`~agents.stepwise.StepwiseAgent` protocol).

    :param n_c: rows per candidate set.
    :param feature_dim: d.
    :param lr: Adam's step size, constant (SB3 wraps a float in a ``ConstantSchedule``).
    :param gamma: discount.
    :param epsilon: a float (constant), "paper", "released" or a callable of the selection count.
    :param buffer_size: replay capacity in transitions; SB3 stores ``buffer_size // B`` steps of ``B``
        sets (``B`` fixed by the first ``observe``), each with its next state (twice the memory of
        :class:`~agents.dqn.RefinementDQN`'s replay), in host memory.
    :param batch_size: minibatch of each gradient step.
    :param learning_starts: transitions stored before the first update (default: ``batch_size``).
    :param target_update_interval: selections between target-network syncs (``polyak_update`` with
        the model's ``tau``, 1.0 = a copy, as SB3's ``_on_step``), checked after each update.
    :param loss: accepted for a uniform config; see the subclass for the loss SB3 actually uses.
    :param device: "auto", "cpu", "cuda", ...
    :param seed: seeds the network initialisation, exploration and replay sampling; SB3's own
        ``seed`` is not used because it reseeds the process-wide RNGs (and cuDNN flags).
    :param policy_kwargs: merged over the defaults (CandidateSetExtractor, ``net_arch=[64]``).
    :param sb3_kwargs: further keyword arguments of the SB3 class (``max_grad_norm``, ``tau``, ...).
    """

    joint_loss: bool = False
    algorithm: ClassVar[str]
    td_loss_name: ClassVar[str]

    def __init__(
        self,
        n_c: int,
        feature_dim: int,
        *,
        lr: float = 1e-3,
        gamma: float = 0.9,
        epsilon: float | str | Callable[[int], float] = 0.5,
        buffer_size: int = 10_000,
        batch_size: int = 64,
        learning_starts: int | None = None,
        target_update_interval: int = 48,
        loss: str = "huber",
        device: str | torch.device = "cpu",
        seed: int | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        **sb3_kwargs: Any,
    ) -> None:
        from stable_baselines3.common.logger import Logger

        from agents.registry import sb3_policy_kwargs

        if loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {loss!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        for name, value in (
            ("buffer_size", buffer_size),
            ("batch_size", batch_size),
            ("target_update_interval", target_update_interval),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.n_c, self.feature_dim = int(n_c), int(feature_dim)
        self.device = resolve_device(device)
        self.buffer_size, self.batch_size = int(buffer_size), int(batch_size)
        self.learning_starts = int(batch_size if learning_starts is None else learning_starts)
        self.target_update_interval = int(target_update_interval)
        self.exploration = make_schedule(epsilon)
        self.hyperparameters: dict[str, Any] = dict(
            algorithm=self.algorithm,
            n_c=self.n_c,
            feature_dim=self.feature_dim,
            lr=lr,
            gamma=gamma,
            epsilon=epsilon if isinstance(epsilon, (int, float, str)) else None,
            buffer_size=self.buffer_size,
            batch_size=self.batch_size,
            learning_starts=self.learning_starts,
            target_update_interval=self.target_update_interval,
            loss=loss,
            td_loss=self.td_loss_name,
            seed=seed,
        )
        self.env = CandidateSetSpaces(self.n_c, self.feature_dim)
        with torch.random.fork_rng(devices=[]):  # the policy is initialised on the CPU, then moved
            if seed is not None:
                torch.manual_seed(seed)
            # buffer_size=1: SB3's own buffer is replaced on the first observe(), when B is known
            self.model = self._sb3_class()(
                "MlpPolicy",
                self.env,
                # a float: SB3's ConstantSchedule ignores the training progress, which only SB3's learn()
                # (never called here) would advance
                learning_rate=float(lr),
                gamma=gamma,
                batch_size=self.batch_size,
                buffer_size=1,
                learning_starts=self.learning_starts,
                target_update_interval=self.target_update_interval,
                policy_kwargs=sb3_policy_kwargs({"policy_kwargs": policy_kwargs}, [64]),
                device=self.device,
                seed=None,
                verbose=0,
                **sb3_kwargs,
            )
        self.model.buffer_size = self.buffer_size
        self.model.replay_buffer = None
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        self._np_rng = np.random.RandomState(seed if seed is not None else int(torch.randint(2**31, ()).item()))
        self.selections = 0
        self.updates = 0
        self._last_sync = 0

    # -- what differs between DQN and QR-DQN ----------------------------------------------------
    @staticmethod
    def _sb3_class() -> type:
        raise NotImplementedError

    def _online_net(self) -> nn.Module:
        raise NotImplementedError

    def _target_net(self) -> nn.Module:
        raise NotImplementedError

    def q_values(self, obs: Tensor) -> Tensor:
        """Q ``[B, n_c]`` of the online network for ``obs: [B, n_c, d]`` (on the agent's device)."""
        raise NotImplementedError

    # -- conveniences -----------------------------------------------------------------------------
    @property
    def q_net(self) -> nn.Module:
        """The online network (SB3's ``q_net`` / ``quantile_net``)."""
        return self._online_net()

    @property
    def q_net_target(self) -> nn.Module:
        """The target network (SB3's ``q_net_target`` / ``quantile_net_target``), synced every ``target_update_interval`` selections."""
        return self._target_net()

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """SB3's policy optimizer, stepped inside :meth:`update`."""
        return self.model.policy.optimizer

    @property
    def replay(self) -> Any:
        """The SB3 ``ReplayBuffer`` (None before the first :meth:`observe`)."""
        return self.model.replay_buffer

    @property
    def exploration_rate(self) -> float:
        """Epsilon at the current selection count."""
        return float(self.exploration(self.selections))

    def _check_obs(self, obs: Tensor) -> None:
        if obs.ndim != 3 or tuple(obs.shape[1:]) != (self.n_c, self.feature_dim):
            raise ValueError(f"obs must be [B, n_c={self.n_c}, d={self.feature_dim}], got {tuple(obs.shape)}")

    # -- the step-wise protocol -------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, mask: Tensor | None = None, deterministic: bool = False, count: bool = True) -> Tensor:
        """Masked epsilon-greedy actions ``[B]`` (long) for ``obs: [B, n_c, d]``; counts selections.

        The network sees ``obs`` with unselectable rows zeroed, as the replay stores states.
        """
        obs = torch.as_tensor(obs).to(self.device, torch.float32)
        self._check_obs(obs)
        mask = rows_present(obs) if mask is None else torch.as_tensor(mask).to(self.device, torch.bool)
        b = obs.shape[0]
        eps = 0.0 if deterministic else self.exploration_rate
        explore = torch.rand(b, generator=self.generator, device=self.device) < eps
        keys = torch.rand((b, self.n_c), generator=self.generator, device=self.device).masked_fill(~mask, -1.0)
        random_actions = keys.argmax(dim=-1)  # uniform among selectable rows
        if eps >= 1.0 or bool(explore.all()):
            actions = random_actions
        else:
            self.model.policy.set_training_mode(False)
            q = self.q_values(obs.masked_fill(~mask.unsqueeze(-1), 0.0)).masked_fill(~mask, float("-inf"))
            actions = torch.where(explore, random_actions, q.argmax(dim=-1))
        if count:
            self.selections += b
        return actions

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
        """Store ``B`` transitions in one ``ReplayBuffer.add`` (one SB3 step of ``B`` envs).

        State: ``obs`` with rows outside ``obs_masks`` (default: its non-zero rows) zeroed; next
        state: ``obs`` with rows outside ``masks`` zeroed (``next_obs`` is not used, as in
        :class:`~agents.dqn.RefinementDQN`). ``B`` must stay what it was on the first call.
        """
        obs = torch.as_tensor(obs, dtype=torch.float32)
        self._check_obs(obs)
        b = obs.shape[0]
        obs_masks = rows_present(obs) if obs_masks is None else torch.as_tensor(obs_masks, device=obs.device).bool()
        masks = torch.as_tensor(masks, device=obs.device).bool()
        state = obs.masked_fill(~obs_masks.unsqueeze(-1), 0.0)
        next_state = obs.masked_fill(~masks.unsqueeze(-1), 0.0)
        if self.replay is None:
            self._make_replay(b)
        elif self.replay.n_envs != b:
            raise ValueError(f"this agent's replay stores steps of B={self.replay.n_envs} candidate sets, got {b}")
        self.replay.add(
            _numpy(state, np.float32),
            _numpy(next_state, np.float32),
            _numpy(actions, np.int64).reshape(b, 1),
            _numpy(rewards, np.float32).reshape(b),
            _numpy(dones, np.float32).reshape(b),
            [],
        )

    def _make_replay(self, n_envs: int) -> None:
        from stable_baselines3.common.buffers import ReplayBuffer

        # handle_timeout_termination=False: no per-sample info loop, and no time limits here
        self.model.replay_buffer = ReplayBuffer(
            self.buffer_size,
            self.env.observation_space,
            self.env.action_space,
            device=self.device,
            n_envs=int(n_envs),
            optimize_memory_usage=False,
            handle_timeout_termination=False,
        )

    def ready(self) -> bool:
        """Whether ``learning_starts`` transitions are stored."""
        return self.replay_size() >= max(self.learning_starts, 1)

    def replay_size(self) -> int:
        """Transitions stored (SB3 steps times ``B``)."""
        return 0 if self.replay is None else int(self.replay.size()) * int(self.replay.n_envs)

    def trainable_modules(self) -> list[nn.Module]:
        """``[]``: SB3's ``train()`` steps this agent's parameters itself."""
        return []

    @torch.no_grad()
    def greedy(self, obs: Tensor, mask: Tensor) -> Tensor:
        """The greedy choice ``[B]`` without exploration, counting or any random draw (diagnostics)."""
        obs, mask = (
            torch.as_tensor(obs).to(self.device, torch.float32),
            torch.as_tensor(mask).to(self.device, torch.bool),
        )
        self.model.policy.set_training_mode(False)
        return self.q_values(obs.masked_fill(~mask.unsqueeze(-1), 0.0)).masked_fill(~mask, float("-inf")).argmax(dim=-1)

    def replayed(self, limit: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Up to ``limit`` stored transitions evenly spaced, ``(obs, mask, actions, rewards)``; None when empty."""
        if self.replay is None or self.replay_size() == 0:
            return None
        rb = self.replay
        steps = int(rb.size())
        obs = torch.from_numpy(rb.observations[:steps].reshape(-1, self.n_c, self.feature_dim))
        n = min(int(limit), obs.shape[0])
        idx = torch.linspace(0, obs.shape[0] - 1, n).round().long()
        obs = obs[idx].to(self.device)
        actions = torch.from_numpy(rb.actions[:steps].reshape(-1))[idx].long().to(self.device)
        rewards = torch.from_numpy(rb.rewards[:steps].reshape(-1))[idx].float().to(self.device)
        return obs, rows_present(obs), actions, rewards

    def update(self, optimize: bool = True) -> Tensor:
        """One SB3 gradient step (``model.train(gradient_steps=1)``); its TD loss, detached.

        A zero tensor while not :meth:`ready`. ``optimize=False`` raises: this agent trains with its
        own optimizer step (``joint_loss = False``).
        """
        if not optimize:
            raise ValueError(
                f"{type(self).__name__} trains with its own optimizer step (joint_loss=False): "
                "call update() with optimize=True, not inside the caller's backward"
            )
        if not self.ready():
            return torch.zeros((), device=self.device)
        with _numpy_global_rng(self._np_rng):
            self.model.train(gradient_steps=1, batch_size=self.batch_size)
        self.updates += 1
        if self.selections - self._last_sync >= self.target_update_interval:
            self._sync_target()
        return torch.tensor(float(self.model.logger.name_to_value[LOSS_KEY]), dtype=torch.float32, device=self.device)

    def optimizer_step(self) -> None:
        """Not for this agent: :meth:`update` steps SB3's optimizer itself."""
        raise ValueError(
            f"{type(self).__name__} has no joint optimizer step (joint_loss=False): update() already stepped it"
        )

    def _sync_target(self) -> None:
        from stable_baselines3.common.utils import polyak_update

        polyak_update(self._online_net().parameters(), self._target_net().parameters(), self.model.tau)
        polyak_update(self.model.batch_norm_stats, self.model.batch_norm_stats_target, 1.0)
        self._last_sync = self.selections

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self, include_replay: bool = False) -> dict[str, Any]:
        """Policy (online and target), optimizer, counters, RNG states, and the replay when asked.

        Tensors, ints and strings only: loads with ``torch.load(weights_only=True)``.
        """
        keys, pos, has_gauss, cached = self._np_rng.get_state()[1:]
        state: dict[str, Any] = {
            "format": SAVE_FORMAT,
            "version": SAVE_VERSION,
            "algorithm": self.algorithm,
            "hyperparameters": json.dumps(self.hyperparameters),
            "policy": self.model.policy.state_dict(),
            "optimizer": self.model.policy.optimizer.state_dict(),
            # the fourth counter was SB3's update count, which always equals ``updates`` (one SB3
            # gradient step per update); kept so that the layout of saved states does not change
            "counters": torch.tensor([self.selections, self.updates, self._last_sync, self.updates], dtype=torch.int64),
            "generator": self.generator.get_state(),
            "numpy_rng": {
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": torch.tensor(float(cached), dtype=torch.float64),
            },
        }
        if include_replay and self.replay is not None:
            rb = self.replay
            state["replay"] = {
                **{
                    name: torch.from_numpy(getattr(rb, name).copy())
                    for name in ("observations", "next_observations", "actions", "rewards", "dones")
                },
                "pos": int(rb.pos),
                "full": int(rb.full),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same algorithm and architecture)."""
        if state.get("format") != SAVE_FORMAT or state.get("algorithm") != self.algorithm:
            raise ValueError(
                f"not a {self.algorithm!r} step-wise SB3 state (format {state.get('format')!r}, "
                f"algorithm {state.get('algorithm')!r})"
            )
        self.model.policy.load_state_dict(state["policy"])
        self.model.policy.optimizer.load_state_dict(state["optimizer"])
        self.selections, self.updates, self._last_sync = (int(v) for v in state["counters"][:3])
        self.generator.set_state(state["generator"])
        rng = state["numpy_rng"]
        self._np_rng.set_state(
            (
                "MT19937",
                rng["keys"].numpy().astype(np.uint32),
                int(rng["pos"]),
                int(rng["has_gauss"]),
                float(rng["cached_gaussian"]),
            )
        )
        replay = state.get("replay")
        if replay is not None:
            steps, n_envs = replay["observations"].shape[:2]
            if max(self.buffer_size // n_envs, 1) != steps:
                raise ValueError(
                    f"the saved replay holds {steps} steps of {n_envs} sets; this agent's buffer_size="
                    f"{self.buffer_size} gives {max(self.buffer_size // n_envs, 1)}"
                )
            self._make_replay(n_envs)
            for name in ("observations", "next_observations", "actions", "rewards", "dones"):
                getattr(self.replay, name)[...] = replay[name].numpy()
            self.replay.pos, self.replay.full = int(replay["pos"]), bool(replay["full"])


class SB3StepwiseDQN(SB3StepwiseAgent):
    """Stable-Baselines3's ``DQN`` driven step-wise.

    Loss: SB3's DQN always trains with its own Huber loss (``F.smooth_l1_loss``) and clips the
    gradient norm to ``max_grad_norm`` (SB3 default 10); ``loss="mse"`` is accepted so one config
    drives every agent, but SB3 uses Huber either way.
    """

    algorithm = "dqn"
    td_loss_name = "huber"

    @staticmethod
    def _sb3_class() -> type:
        from stable_baselines3 import DQN

        return DQN

    def _online_net(self) -> nn.Module:
        return self.model.q_net

    def _target_net(self) -> nn.Module:
        return self.model.q_net_target

    def q_values(self, obs: Tensor) -> Tensor:
        return self.model.q_net(obs)


class SB3StepwiseQRDQN(SB3StepwiseAgent):
    """sb3-contrib's ``QRDQN`` driven step-wise; Q is the mean over the quantiles.

    Loss: QR-DQN trains with the quantile Huber loss (summed over quantiles) whatever ``loss`` says;
    ``loss`` is accepted for a uniform config. ``policy_kwargs={"n_quantiles": ...}`` sets the
    number of quantiles (sb3-contrib default 200).
    """

    algorithm = "qrdqn"
    td_loss_name = "quantile_huber"

    @staticmethod
    def _sb3_class() -> type:
        from sb3_contrib import QRDQN

        return QRDQN

    def _online_net(self) -> nn.Module:
        return self.model.quantile_net

    def _target_net(self) -> nn.Module:
        return self.model.quantile_net_target

    def q_values(self, obs: Tensor) -> Tensor:
        return self.model.quantile_net(obs).mean(dim=1)
