"""The step-wise agent protocol that co-training drives, and a registry of step-wise agents by name.

Co-training does not let an agent own its loop: each training batch it calls ``act`` on the
candidate sets, ``observe`` on the transitions, and ``update`` for the TD loss. Two kinds of agent
fit: those whose loss joins the co-training loss (``joint_loss = True``: ``update(optimize=False)``
returns a loss attached to the Q-network's graph, the caller backpropagates it with its own loss and
then calls ``optimizer_step()``), and those that train themselves (``joint_loss = False``:
``update()`` runs its own backward and optimizer step and returns the loss detached).

Built in: ``mmir-dqn`` (:class:`StepwiseRefinementDQN`, joint loss), SB3's ``dqn`` and sb3-contrib's
``qrdqn`` (:mod:`agents.sb3_stepwise`, own optimizer step). Add others with
:func:`register_stepwise_agent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from agents.dqn import RefinementDQN
from agents.qnets import masked_q
from features.devices import resolve_device
from features.registry import Registry

StepwiseAgentFactory = Callable[..., "StepwiseAgent"]

# Co-training's defaults (experiments.config.AgentConfig); learning_starts None = batch_size.
STEPWISE_DEFAULTS: dict[str, Any] = dict(
    lr=1e-3,
    gamma=0.9,
    epsilon=0.5,
    buffer_size=10_000,
    batch_size=64,
    learning_starts=None,
    target_update_interval=48,
    loss="mse",
    q_net="set",
)


@runtime_checkable
class StepwiseAgent(Protocol):
    """An agent that an outer loop drives one selection step at a time (co-training, eq. 7-10).

    Shapes: ``B`` candidate sets per step, ``n_c`` rows per set, ``d`` features per row.

    - ``act(obs [B, n_c, d] float32, mask [B, n_c] bool, deterministic=False) -> [B] long``:
      masked epsilon-greedy; never picks a row whose mask is False (each set needs one selectable
      row); counts the ``B`` selections (epsilon schedules and target syncs count selections).
    - ``observe(obs, actions, rewards, next_obs, dones, masks, obs_masks=None)``: stores ``B``
      transitions; the next state is ``obs`` with the rows outside ``masks`` (the next state's
      selectable rows) zeroed, so ``next_obs`` may be None; ``obs_masks`` are the state's
      selectable rows (default: its non-zero rows). With ``E = 1`` every transition is terminal.
    - ``update(optimize=True) -> Tensor``: one gradient step's TD loss (a zero tensor while not
      :meth:`ready`). ``optimize=False`` is only for ``joint_loss`` agents.
    - ``optimizer_step()``: after the caller's joint backward (``joint_loss`` agents only).
    - ``state_dict(include_replay=False)`` / ``load_state_dict(state)``: everything to resume
      training, loadable with ``torch.load(weights_only=True)``.
    """

    joint_loss: bool
    """True: ``update(optimize=False)`` returns a loss attached to a graph that the caller
    backpropagates with its own loss, then calls ``optimizer_step()``. False: call ``update()``
    (optimize=True); it does its own backward and optimizer step."""

    def act(self, obs: Tensor, mask: Tensor, deterministic: bool = False) -> Tensor:
        """Masked epsilon-greedy actions ``[B]`` (long) for ``obs: [B, n_c, d]``."""
        ...

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
        """Store ``B`` transitions; ``masks`` are the next states' selectable rows."""
        ...

    def update(self, optimize: bool = True) -> Tensor:
        """One gradient step's TD loss; a zero tensor while not :meth:`ready`."""
        ...

    def optimizer_step(self) -> None:
        """Step the agent's optimizer after the caller's joint backward (``joint_loss`` agents)."""
        ...

    def ready(self) -> bool:
        """Whether enough transitions are stored for :meth:`update` to learn (``learning_starts``)."""
        ...

    def replay_size(self) -> int:
        """Transitions stored in the replay."""
        ...

    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the joint backward trains; ``[]`` when ``joint_loss`` is False."""
        ...

    def state_dict(self, include_replay: bool = False) -> dict[str, Any]:
        """Networks, optimizer, counters, RNG state (and the replay when asked)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class StepwiseRefinementDQN(RefinementDQN):
    """:class:`~agents.dqn.RefinementDQN` with the :class:`StepwiseAgent` additions (joint loss).

    Adds members only: construction, RNG draws and numerics are RefinementDQN's.
    """

    joint_loss: bool = True

    def ready(self) -> bool:
        """The condition under which :meth:`update` returns a learning loss rather than zero."""
        return len(self.replay) >= max(self.learning_starts, 1)

    def replay_size(self) -> int:
        """Transitions stored in the replay."""
        return len(self.replay)

    def trainable_modules(self) -> list[nn.Module]:
        """The online Q-network (its parameters are what :meth:`optimizer_step` steps)."""
        return [self.q_net]

    @torch.no_grad()
    def greedy(self, obs: Tensor, mask: Tensor) -> Tensor:
        """The greedy choice ``[B]`` without exploration, counting or any random draw (diagnostics)."""
        obs, mask = obs.to(self.device, torch.float32), mask.to(self.device, torch.bool)
        return masked_q(self.q_net(obs, mask), mask).argmax(dim=-1)

    def replayed(self, limit: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Up to ``limit`` stored transitions evenly spaced, ``(obs, mask, actions, rewards)``; None when empty."""
        return self.replay.spread(limit) if len(self.replay) else None


# -- registry ---------------------------------------------------------------------------------------
#: name -> ``factory(*, n_c, feature_dim, device, seed, **hyperparameters) -> StepwiseAgent``.
STEPWISE_AGENTS: Registry[StepwiseAgentFactory] = Registry("step-wise agent", "agents.algorithm")


def register_stepwise_agent(name: str, factory: StepwiseAgentFactory, overwrite: bool = False) -> None:
    """Register ``factory(*, n_c, feature_dim, device, seed, **hyperparameters) -> StepwiseAgent``."""
    STEPWISE_AGENTS.register(name, factory, overwrite=overwrite)


def registered_stepwise_agents() -> list[str]:
    """Names accepted by :func:`make_stepwise_agent`, sorted."""
    return STEPWISE_AGENTS.names()


def make_stepwise_agent(
    name: str, *, n_c: int, feature_dim: int, device: str | torch.device, seed: int | None, **hyperparameters: Any
) -> StepwiseAgent:
    """Build the step-wise agent registered as ``name``; an unknown name lists the registered ones.

    ``hyperparameters``: lr, gamma, epsilon, buffer_size, batch_size, learning_starts,
    target_update_interval, loss ("mse" | "huber"), q_net ("set" | "flat"; mmir-dqn only), plus
    whatever extra keywords the factory accepts. Unset ones take :data:`STEPWISE_DEFAULTS`.
    ``device`` "auto" picks CUDA when available.
    """
    factory = STEPWISE_AGENTS.resolve(name)
    return factory(n_c=n_c, feature_dim=feature_dim, device=resolve_device(device), seed=seed, **hyperparameters)


def _with_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**STEPWISE_DEFAULTS, **kwargs}


# RefinementDQN keywords that co-training never sets but whose values its numbers depend on: they
# are the standalone defaults of RefinementDQN before its offline defaults were tuned, pinned here so that tuning RefinementDQN's own
# defaults for offline learning leaves every co-training run bit-identical.
COTRAIN_DQN_PINNED: dict[str, Any] = dict(
    train_freq=1,
    gradient_steps=1,
    max_grad_norm=None,
    weight_decay=1e-7,
    replay_dtype="float32",
    q_net_kwargs=None,
)


def _mmir_dqn(
    *, n_c: int, feature_dim: int, device: torch.device, seed: int | None, **kwargs: Any
) -> StepwiseRefinementDQN:
    # Argument for argument what experiments.refiners.agent.AgentRefiner passes to RefinementDQN.
    hp = {**COTRAIN_DQN_PINNED, **_with_defaults(kwargs)}
    lr, gamma, epsilon, buffer_size, batch_size, learning_starts, target_update_interval, loss, q_net = (
        hp.pop(k)
        for k in (
            "lr",
            "gamma",
            "epsilon",
            "buffer_size",
            "batch_size",
            "learning_starts",
            "target_update_interval",
            "loss",
            "q_net",
        )
    )
    return StepwiseRefinementDQN(
        n_c=n_c,
        feature_dim=feature_dim,
        q_net=q_net,
        learning_rate=lr,
        gamma=gamma,
        epsilon=epsilon,
        buffer_size=buffer_size,
        batch_size=batch_size,
        learning_starts=learning_starts,
        target_update_interval=target_update_interval,
        loss=loss,
        device=device,
        seed=seed,
        **hp,
    )


def _sb3(algorithm: str) -> StepwiseAgentFactory:
    def factory(*, n_c: int, feature_dim: int, device: torch.device, seed: int | None, **kwargs: Any) -> StepwiseAgent:
        from agents.sb3_stepwise import SB3StepwiseDQN, SB3StepwiseQRDQN

        hp = _with_defaults(kwargs)
        hp.pop("q_net")  # SB3's network is its policy (CandidateSetExtractor + MLP head)
        cls = SB3StepwiseDQN if algorithm == "dqn" else SB3StepwiseQRDQN
        return cls(n_c=n_c, feature_dim=feature_dim, device=device, seed=seed, **hp)

    factory.__name__ = f"make_stepwise_{algorithm}"
    return factory


register_stepwise_agent("mmir-dqn", _mmir_dqn)
register_stepwise_agent("dqn", _sb3("dqn"))
register_stepwise_agent("qrdqn", _sb3("qrdqn"))
