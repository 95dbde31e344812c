"""Several batched refinement envs of one shape stepped as one.

Co-training refines four half-batches per step (an S-agent and a T-agent per modality), each in
its own :class:`~mmir_env.batched.BatchedRefinementEnv` with its own discriminator, domain and
threshold. Their candidate sets are tiny, so four env steps cost four times the same few dozen
kernel launches. An :class:`EnvGroup` holds the envs' states as views of ``[G, ...]`` stacks: a
selection in every env is then one gather, one reward and one write for all of them (the envs'
discriminators still score their own sets: one forward each, as before). Each env keeps working
on its own (``step``, ``load_candidate_sets``) on the same, shared state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from mmir_env.batched import BatchedRefinementEnv
from mmir_env.reward import margin_reward, rank_reward, refinement_reward

GROUPED_REWARDS = ("threshold", "margin", "rank")  # every reward of eq. 3 relevance (not of a signal combination)


def group_blocker(envs: Sequence[BatchedRefinementEnv]) -> str | None:
    """Why ``envs`` cannot step as one :class:`EnvGroup` (None: they can)."""
    if len(envs) < 2:
        return "a group needs two or more envs"
    first = envs[0]
    shape = (first.num_envs, first.n_c, first.feature_dim, first.E, first.device)
    for env in envs:
        if (env.num_envs, env.n_c, env.feature_dim, env.E, env.device) != shape:
            return "the envs differ in num_envs, n_c, feature_dim, E or device"
        if env.autoreset_mode != AutoresetMode.DISABLED:
            return "a group never refills sets: every env needs autoreset_mode DISABLED"
        if env.observation_signals or env.signals.signal_reward is not None:
            return "relevance signals in the observation or the reward step env by env"
        if env.reward_kind not in GROUPED_REWARDS:
            return f"reward {env.reward_kind!r} is not one a group computes"
        if env.logit_noise:
            return "logit noise draws from each env's generator: it steps env by env"
        if not env.score_all_rows:
            return "a group scores every row (score_all_rows=True)"
    if len({env.reward_kind for env in envs}) != 1:
        return "the envs' rewards differ"
    return None


@dataclass
class GroupStep:
    """One selection in every set of a group's ``G`` envs (each ``[G, num_envs, ...]``, on the device)."""

    obs: Tensor  # [G, S, n_c, d] the live observation (the group's buffer: the next step overwrites it)
    rewards: Tensor  # [G, S] float32
    terminated: Tensor  # [G, S] bool
    relevance_rows: Tensor  # [G, S, n_c] every row's eq. 3 relevance before the selection
    is_negative: Tensor | None  # [G, S] whether the chosen rows are planted negatives (envs with ground truth)


class EnvGroup:
    """``G`` envs of one shape (:func:`group_blocker`) whose states live in ``[G, ...]`` stacks.

    :meth:`step` gives every env the transition of its own
    :meth:`~mmir_env.batched.BatchedRefinementEnv.step_unchecked`, bit for bit, under the same
    contract: each action a selectable row of a set that has not ended.
    """

    def __init__(self, envs: Sequence[BatchedRefinementEnv]) -> None:
        blocker = group_blocker(envs)
        if blocker is not None:
            raise ValueError(f"these envs cannot step as one group: {blocker}")
        self.envs = list(envs)
        first, g = envs[0], len(envs)
        self.E, self.reward_kind = first.E, first.reward_kind
        shape, device = (g, first.num_envs, first.n_c), first.device
        self.obs = torch.zeros((*shape, first.feature_dim), device=device)
        self.mask = torch.zeros(shape, dtype=torch.bool, device=device)
        self.steps = torch.zeros(shape[:2], dtype=torch.int64, device=device)
        self.done = torch.ones(shape[:2], dtype=torch.bool, device=device)
        self.index = torch.full(shape, -1, dtype=torch.int64, device=device)
        for i, env in enumerate(envs):
            env.share_state(self.obs[i], self.mask[i], self.steps[i], self.done[i], self.index[i], group=self)
        # float32 like the relevance: each comparison is the one the env makes with its float tau
        self.tau = torch.tensor([env.tau for env in envs], dtype=torch.float32, device=device).reshape(g, 1)
        self._g = torch.arange(g, device=device).reshape(g, 1)
        self._s = torch.arange(first.num_envs, device=device).reshape(1, -1)

    @staticmethod
    def of(envs: Sequence[BatchedRefinementEnv]) -> EnvGroup | None:
        """The group these envs already share, else a new one (None where :func:`group_blocker` objects)."""
        current = envs[0].group if envs else None
        if current is not None and len(current.envs) == len(envs) and all(a is b for a, b in zip(current.envs, envs)):
            return current
        return None if group_blocker(envs) is not None else EnvGroup(envs)

    def load(self, features: Tensor, is_negative: Tensor | None = None) -> Tensor:
        """Every env's :meth:`~mmir_env.batched.BatchedRefinementEnv.load_candidate_sets` at once: ``features``
        ``[G, num_envs * n_c, d]`` (or ``[G, num_envs, n_c, d]``), checked finite by the caller, ``is_negative`` the
        same without ``d``; returns the live observation ``[G, num_envs, n_c, d]``."""
        g, s, n_c, d = self.obs.shape
        if features.shape[0] != g or features.shape[1:].numel() != s * n_c * d or not features.is_floating_point():
            raise ValueError(
                f"features must be {g} floating-point halves of {s * n_c} rows x {d}, got {tuple(features.shape)}"
            )
        self.obs.copy_(features.detach().reshape(g, s, n_c, d))
        self.mask.fill_(True)
        self.steps.zero_()
        self.done.fill_(False)
        self.index.fill_(-1)
        truth = None if is_negative is None else is_negative.to(self.obs.device, torch.bool).reshape(g, s, n_c).clone()
        for i, env in enumerate(self.envs):
            env.loaded_by_group(None if truth is None else truth[i])
        return self.obs

    def is_negative(self) -> Tensor | None:
        """``[G, S, n_c]`` planted ground truth of the current sets when every env has it, else None."""
        truth = [env.candidate_is_negative for env in self.envs]
        return None if any(t is None for t in truth) else torch.stack(truth)  # type: ignore[arg-type]

    @torch.no_grad()
    def step(self, actions: Tensor) -> GroupStep:
        """Select ``actions`` (int64 ``[G, S]`` on the device: one selectable row per set) out of every env's sets."""
        rows = torch.stack([env.reward_relevance() for env in self.envs])  # each env's discriminator: its own forward
        chosen = actions.unsqueeze(-1)
        if self.reward_kind == "rank":
            rewards = rank_reward(rows, actions, self.mask)  # the rows selectable before this selection
        else:
            relevance = rows.gather(-1, chosen).squeeze(-1)
            reward = margin_reward if self.reward_kind == "margin" else refinement_reward
            rewards = reward(relevance, self.tau)
        truth = self.is_negative()
        hits = None if truth is None else truth.gather(-1, chosen).squeeze(-1)
        self.obs[self._g, self._s, actions] = 0.0
        self.mask[self._g, self._s, actions] = False
        self.steps += 1
        terminated = self.steps >= self.E
        self.done |= terminated
        return GroupStep(self.obs, rewards.float(), terminated, rows, hits)


__all__ = ["EnvGroup", "GroupStep", "group_blocker"]
