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
from experiments.config_layers import ConfigError
from experiments.refiners import RefinementResult, RefinerContext
from experiments.refiners.diagnostics import set_diagnostics, staleness
from mmir_env.batched import BatchedRefinementEnv
from mmir_env.domains import SOURCE
from mmir_env.reward import compute_reward
from mmir_env.scoring import discriminator_relevance


def refinement_env(context: RefinerContext) -> BatchedRefinementEnv:
    """The batched env that scores one half-batch's candidate sets with the live discriminator."""
    env = context.config.env
    if context.batch_size % env.n_c:
        raise ValueError(f"the {context.domain} half-batch ({context.batch_size}) must be a multiple of n_c={env.n_c}")
    return BatchedRefinementEnv(
        None,
        discriminator=context.scorer,
        num_envs=context.batch_size // env.n_c,
        domain=context.domain,
        n_c=env.n_c,
        E=env.E,
        tau=env.tau_s if context.domain == "source" else env.tau_t,
        reward=env.reward,
        autoreset_mode="Disabled",
        device=context.device,
        copy=False,
        feature_dim=context.feature_dim,
        score_all_rows=True,
    )


class AgentRefiner:
    """Rows selected out by a step-wise RL agent, rewarded by the live discriminator (paper section 3.2).

    The designs of ``[refinement]`` (the paper's behaviour is every switch off):
    ``relevance = "critic"`` scores rewards with the relevance critic instead of ``D^k``;
    ``relabel`` re-scores replayed transitions with the current relevance model when the agent
    learns from them; ``warmup_steps`` lets the agents act and learn for that many stage-2 steps
    before their selections leave L_adv; ``env.reward = "rank" | "margin"`` changes the reward.
    Every step also records the diagnostics of :mod:`experiments.refiners.diagnostics` in ``stats``.
    """

    STALENESS_ROWS = 256  # replayed transitions re-scored per step for the staleness diagnostic

    def __init__(self, context: RefinerContext) -> None:
        self.modality, self.domain = context.modality, context.domain
        env = context.config.env
        self.n_c, self.E = env.n_c, env.E
        self.env = refinement_env(context)
        self.reward_kind, self.tau = self.env.reward_kind, self.env.tau
        self.discriminator, self.scorer = context.discriminator, context.scorer
        a = context.config.agents
        self.agent = make_stepwise_agent(
            a.algorithm,
            n_c=env.n_c,
            feature_dim=context.feature_dim,
            device=context.device,
            seed=context.seed,
            q_net=a.q_net,
            lr=a.lr,
            gamma=a.gamma,
            epsilon=a.epsilon,
            buffer_size=a.buffer_size,
            batch_size=a.batch_size,
            learning_starts=a.learning_starts,
            target_update_interval=a.target_update_interval,
            loss=a.loss,
        )
        self._stats: dict[str, float] | None = None
        r = context.config.refinement
        # learn-only: the agents act, are rewarded and learn, but every row stays in L_adv (the learn-only control)
        self.learn_only = bool(r.learn_only)
        self.warmup_steps = int(r.warmup_steps)
        self.calls = 0  # refine() calls so far (stage-2 steps): the warm-up's clock, kept in checkpoints
        self.diagnostics = bool(r.diagnostics)
        self.diagnostics_every = int(r.diagnostics_every)
        if r.relabel:
            if not hasattr(self.agent, "reward_relabel"):
                raise ConfigError(
                    f"refinement.relabel = true needs an agent that re-scores its replay (mmir-dqn), "
                    f"not agents.algorithm = {a.algorithm!r}"
                )
            self.agent.reward_relabel = self.current_reward

    @torch.no_grad()
    def current_reward(self, obs: Tensor, mask: Tensor, actions: Tensor) -> Tensor:
        """The reward of selecting ``actions`` from states ``obs [N, n_c, d]`` under the relevance model as it is now."""
        rel = discriminator_relevance(self.scorer, obs, self.env.domain)
        return compute_reward(self.reward_kind, rel, actions.long(), mask.bool(), self.tau)

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        """Select rows out of ``features: [B, d]`` (detached: the agents do not train the backbone)."""
        b, d = features.shape
        s = b // self.n_c
        stats: dict[str, float] = {}
        diagnose = self.diagnostics and self.calls % self.diagnostics_every == 0
        replayed = self.agent.replayed(self.STALENESS_ROWS) if diagnose and hasattr(self.agent, "replayed") else None
        if replayed is not None:  # rewards stored by earlier steps against the relevance model now
            obs_r, mask_r, actions_r, rewards_r = replayed
            stats["diag/staleness"] = staleness(rewards_r, self.current_reward(obs_r, mask_r, actions_r))
        sets = features.detach().float().reshape(s, self.n_c, d)
        negatives = None if is_negative is None else is_negative.reshape(s, self.n_c)
        obs = self.env.load_candidate_sets(sets, negatives)
        first_mask = self.env.mask.clone()
        greedy = self.agent.greedy(obs, first_mask) if diagnose and hasattr(self.agent, "greedy") else None
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
            self.agent.observe(
                state, actions, rewards, None, terminated, self.env.mask, obs_masks=mask
            )  # the replay copies
            total_reward += float(rewards.sum())
            if "is_negative" in info:
                negatives_removed += int(info["is_negative"].sum())
        chosen = ~self.env.mask
        keep = self.env.mask.reshape(-1).clone()
        removed = int((~keep).sum())  # what the agent chose, also when it may not remove (learn-only, warm-up)
        holding = self.learn_only or self.calls < self.warmup_steps
        self.calls += 1
        if holding:
            keep = torch.ones_like(keep)
        loss = self.agent.update(optimize=False) if self.agent.joint_loss else None
        stats["replay"] = float(self.agent.replay_size())
        if loss is not None:
            stats["td_loss"] = float(loss.detach())
        self._stats = stats
        if holding:  # the selections, for the agents' precision; nothing left L_adv
            stats["selected"], stats["selected_negatives"] = float(removed), float(negatives_removed)
            negatives_removed = 0
        p_target = None
        if relevance is not None and diagnose:
            diag = set_diagnostics(
                relevance.reshape(s, self.n_c), first_mask, greedy, chosen, negatives, self.reward_kind, self.tau
            )
            stats.update({f"diag/{k}": v for k, v in diag.items()})
            p_target = self._p_target(features, relevance)
        return RefinementResult(
            keep=keep,
            mean_reward=total_reward / (s * self.E),
            removed=int((~keep).sum()),
            negatives_removed=negatives_removed,
            negatives_present=0 if is_negative is None else int(is_negative.sum()),
            relevance=relevance,
            p_target=p_target,
            loss=loss,
            stats=stats,
        )

    def _p_target(self, features: Tensor, relevance: Tensor) -> Tensor:
        """The GRL discriminator's P(target) of every row (its AUC is a diagnostic also when a critic scores rewards)."""
        if self.scorer is self.discriminator:
            return relevance if self.env.domain == SOURCE else 1.0 - relevance
        return discriminator_relevance(self.discriminator, features.detach(), SOURCE)

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
        return {**self.agent.state_dict(include_replay=include_replay), "refiner_calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.calls = int(state.pop("refiner_calls", 0))
        self.agent.load_state_dict(state)
