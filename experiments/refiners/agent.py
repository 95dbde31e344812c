"""The paper's refiner: an S-agent (source half) or T-agent (target half) of one modality.

The half-batch's ``B`` features are cut into ``B / n_c`` candidate sets and loaded into a
:class:`~mmir_env.batched.BatchedRefinementEnv` whose reward comes from the modality's live
discriminator; the agent selects ``E`` rows per set, the transitions go to its replay, and the rows
left in are returned for the adversarial loss (eq. 8). The agent is any step-wise agent of
:mod:`agents.stepwise` (``agents.algorithm``): ``mmir-dqn`` adds its TD loss to the step's one
backward (eq. 7/9); agents with their own optimizer step (SB3's ``dqn``, sb3-contrib's ``qrdqn``)
train after it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from agents.stepwise import make_stepwise_agent
from experiments.refiners import RefinementResult, RefinerContext
from mmir_env.batched import BatchedRefinementEnv


def refinement_env(context: RefinerContext) -> BatchedRefinementEnv:
    """The batched env that scores one half-batch's candidate sets with the live discriminator."""
    env = context.config.env
    if context.batch_size % env.n_c:
        raise ValueError(f"the {context.domain} half-batch ({context.batch_size}) must be a multiple of n_c={env.n_c}")
    return BatchedRefinementEnv(
        None, discriminator=context.discriminator, num_envs=context.batch_size // env.n_c, domain=context.domain, n_c=env.n_c,
        E=env.E, tau=env.tau_s if context.domain == "source" else env.tau_t, reward=env.reward, autoreset_mode="Disabled",
        device=context.device, copy=False, feature_dim=context.feature_dim, score_all_rows=True,
    )


class AgentRefiner:
    """Rows selected out by a step-wise RL agent, rewarded by the live discriminator (paper section 3.2)."""

    def __init__(self, context: RefinerContext) -> None:
        self.modality, self.domain = context.modality, context.domain
        env = context.config.env
        self.n_c, self.E = env.n_c, env.E
        self.env = refinement_env(context)
        a = context.config.agents
        self.agent = make_stepwise_agent(
            a.algorithm, n_c=env.n_c, feature_dim=context.feature_dim, device=context.device, seed=context.seed,
            q_net=a.q_net, lr=a.lr, gamma=a.gamma, epsilon=a.epsilon, buffer_size=a.buffer_size, batch_size=a.batch_size,
            learning_starts=a.learning_starts, target_update_interval=a.target_update_interval, loss=a.loss,
        )
        self._stats: dict[str, float] | None = None
        # learn-only: the agents act, are rewarded and learn, but every row stays in L_adv (issue 13's control)
        self.learn_only = bool(getattr(context.config.refinement, "learn_only", False))

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        """Select rows out of ``features: [B, d]`` (detached: the agents do not train the backbone)."""
        b, d = features.shape
        sets = features.detach().float().reshape(b // self.n_c, self.n_c, d)
        negatives = None if is_negative is None else is_negative.reshape(b // self.n_c, self.n_c)
        obs = self.env.load_candidate_sets(sets, negatives)
        relevance: Tensor | None = None  # every row's relevance before the first selection (reports)
        total_reward = 0.0
        negatives_removed = 0
        for _ in range(self.E):
            mask = self.env.mask.clone()
            state = obs.clone()  # the env zeroes the chosen rows of its live buffer in place
            actions = self.agent.act(state, mask)
            obs, rewards, terminated, _, info = self.env.step(actions)
            if relevance is None and "relevance_rows" in info:
                relevance = info["relevance_rows"].reshape(-1)
            self.agent.observe(state, actions, rewards, None, terminated, self.env.mask, obs_masks=mask)  # the replay copies
            total_reward += float(rewards.sum())
            if "is_negative" in info:
                negatives_removed += int(info["is_negative"].sum())
        keep = self.env.mask.reshape(-1).clone()
        removed = int((~keep).sum())  # what the agent chose, also when it may not remove (learn-only)
        if self.learn_only:
            keep = torch.ones_like(keep)
        loss = self.agent.update(optimize=False) if self.agent.joint_loss else None
        stats: dict[str, float] = {"replay": float(self.agent.replay_size())}
        if loss is not None:
            stats["td_loss"] = float(loss.detach())
        self._stats = stats
        if self.learn_only:  # the selections, for the agents' precision; nothing left L_adv
            stats["selected"], stats["selected_negatives"] = float(removed), float(negatives_removed)
            negatives_removed = 0
        return RefinementResult(keep=keep, mean_reward=total_reward / (sets.shape[0] * self.E), removed=int((~keep).sum()),
                                negatives_removed=negatives_removed,
                                negatives_present=0 if is_negative is None else int(is_negative.sum()), relevance=relevance,
                                loss=loss, stats=stats)

    def after_backward(self) -> None:
        if not self.agent.ready():
            return
        if self.agent.joint_loss:
            self.agent.optimizer_step()
        else:
            td = self.agent.update(optimize=True)
            if self._stats is not None:
                self._stats["td_loss"] = float(td)

    def trainable_modules(self) -> list[nn.Module]:
        return list(self.agent.trainable_modules())

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        return self.agent.state_dict(include_replay=include_replay)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state)
