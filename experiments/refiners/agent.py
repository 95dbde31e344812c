"""The paper's refiner: an S-agent (source half) or T-agent (target half) of one modality.

The half-batch's ``B`` features are cut into ``B / n_c`` candidate sets and loaded into a
:class:`~mmir_env.batched.BatchedRefinementEnv` whose reward comes from the modality's live
discriminator; the agent selects ``E`` rows per set, the transitions go to its replay, and the rows
left in are returned for the adversarial loss (eq. 8). The agent is any step-wise agent of
:mod:`agents.stepwise` (``agents.algorithm``): ``mmir-dqn`` adds its TD loss to the step's one
backward (eq. 7/9); agents with their own optimizer step (SB3's ``dqn``, sb3-contrib's ``qrdqn``)
train after it.

With ``env.reward_signals`` / ``env.observation_signals`` the env's reward and the agent's state
come from relevance signals (:mod:`mmir_env.signals`): the refiner asks the co-training module for
their inputs (``signal_needs``) and hands them to the env with the candidate sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from agents.grouped import AgentGroup, SetQWeights, groupable
from agents.stepwise import make_stepwise_agent
from experiments.config_layers import ConfigError
from experiments.refiners import SIGNAL_ROW_INPUTS, RefinementResult, RefinerContext, SignalRows
from experiments.refiners.diagnostics import set_diagnostics, signal_aucs, staleness
from mmir_env.batched import BatchedRefinementEnv, check_finite
from mmir_env.domains import SOURCE
from mmir_env.env_group import EnvGroup
from mmir_env.reward import compute_reward
from mmir_env.scoring import discriminator_relevance
from mmir_env.signals import SignalInputs, resolve_signal


def refinement_env(context: RefinerContext) -> BatchedRefinementEnv:
    """The batched env that scores one half-batch's candidate sets with the live discriminator (and the
    relevance signals of ``env.reward_signals`` / ``env.observation_signals``; empty: the paper's env)."""
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
        observation_signals=env.observation_signals or None,
        reward_signals=env.reward_signals or None,
        signal_options=env.signal_options or None,
    )


class SignalDiagnostics:
    """What a refiner with relevance signals asks for and reports: the inputs of its next call, ``diag/auc/*``.

    ``refinement.signal_aucs`` names signals whose ``negative_auc`` against the planted negatives is
    logged on diagnostics steps (``diag/auc/NAME``): computed from the state the env holds, with no
    gradient and no random draw, so it never changes a run.
    """

    def __init__(self, context: RefinerContext, env: BatchedRefinementEnv) -> None:
        r = context.config.refinement
        self.env = env
        self.aucs: tuple[str, ...] = tuple(r.signal_aucs)
        self.diagnostics, self.every = bool(r.diagnostics), int(r.diagnostics_every)
        self.env_needs = frozenset(env.signals.needs) & SIGNAL_ROW_INPUTS
        self.auc_needs = frozenset(n for name in self.aucs for n in resolve_signal(name).needs) & SIGNAL_ROW_INPUTS

    def diagnoses(self, calls: int) -> bool:
        """Whether the refiner's call number ``calls`` (from 0) takes the diagnostics."""
        return self.diagnostics and calls % self.every == 0

    def needs(self, calls: int) -> frozenset[str]:
        """The signal inputs that call number ``calls`` reads: the env's always, the AUCs' on diagnostics steps."""
        return self.env_needs | self.auc_needs if self.aucs and self.diagnoses(calls) else self.env_needs

    def aucs_now(self, negatives: Tensor | None) -> dict[str, float]:
        """``diag/auc/NAME`` of the sets the env holds now (before any selection); none without ground truth."""
        if not self.aucs or negatives is None:
            return {}
        values = signal_aucs(self.aucs, self.env.signal_inputs(), negatives, self.env.signals.options)
        return {f"diag/{k}": v for k, v in values.items()}

    def report_relevance(self, scorer: nn.Module, sets: Tensor) -> Tensor | None:
        """``[B]`` eq. 3 relevance of every row for the reports when the reward's relevance is a combination
        (else None: the env's rows are eq. 3 already)."""
        if self.env.signals.signal_reward is None:
            return None
        return discriminator_relevance(scorer, sets, self.env.domain).reshape(-1)


def relabel_blocker(env: BatchedRefinementEnv) -> str | None:
    """Why replayed states cannot be re-scored under the env's reward (a signal reads more than their features), or None."""
    combination = env.signals.signal_reward
    if combination is None:
        return None
    for name in combination.names:
        extra = sorted(set(resolve_signal(name).needs) - {"discriminator"})
        if extra:
            return f"env.reward_signals names {name!r}, which needs {extra[0]!r}"
    return None


@dataclass
class Selection:
    """One half-batch's selection in progress (:meth:`AgentRefiner.begin` -> ``record`` x E -> ``finish``)."""

    features: Tensor  # [B, d]
    is_negative: Tensor | None  # [B] planted ground truth
    negatives: Tensor | None  # [S, n_c] the same, per candidate set
    stats: dict[str, float]
    obs: Tensor  # [S, n_c, d] the env's current observation
    first_mask: Tensor | None  # [S, n_c] selectable rows before the first selection (diagnostics steps)
    greedy: Tensor | None  # [S] the agent's greedy choice before the first selection (diagnostics)
    relevance: Tensor | None = None  # [B] every row's eq. 3 relevance before the first selection (reports)
    # [S, n_c] every row's relevance under the reward's signal combination before the first selection
    # (diagnostics); None: the reward's relevance is eq. 3, ``relevance``
    reward_relevance: Tensor | None = None
    reward_total: Tensor | None = None  # the sets' rewards summed over the selection steps so far (float64)
    negatives_removed: Tensor | None = None  # planted negatives removed over the selection steps so far (int64)

    def next_state(self, env: BatchedRefinementEnv) -> tuple[Tensor, Tensor]:
        """``(state, mask)`` of the next selection: copies, because the env zeroes chosen rows of its live buffer in place."""
        return self.obs.clone(), env.mask.clone()


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
        # what the threshold and margin rewards compare with: tau, or 0 for a standardised signal combination
        self.reward_threshold = self.env.reward_threshold
        self.reward_signals = self.env.signals.signal_reward  # None: eq. 3
        self.feature_dim = context.feature_dim
        self.signals = SignalDiagnostics(context, self.env)
        # replayed states hold features only: a reward that reads more cannot score them again
        self.relabel_blocker = relabel_blocker(self.env)
        self.discriminator, self.scorer = context.discriminator, context.scorer
        a = context.config.agents
        self.agent = make_stepwise_agent(
            a.algorithm,
            n_c=env.n_c,
            feature_dim=self.env.single_observation_space.shape[-1],  # d, plus a column per observation signal
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
        if r.relabel:
            if not hasattr(self.agent, "reward_relabel"):
                raise ConfigError(
                    f"refinement.relabel = true needs an agent that re-scores its replay (mmir-dqn), "
                    f"not agents.algorithm = {a.algorithm!r}"
                )
            if self.relabel_blocker is not None:
                raise ConfigError(
                    f"refinement.relabel = true re-scores replayed states, which hold features only: {self.relabel_blocker}"
                )
            self.agent.reward_relabel = self.current_reward

    @torch.no_grad()
    def current_reward(self, obs: Tensor, mask: Tensor, actions: Tensor) -> Tensor:
        """The reward of selecting ``actions`` from states ``obs [N, n_c, d (+ k)]`` under the relevance model as
        it is now (and the env's signal combination, whose signals then read features only)."""
        feats = obs if obs.shape[-1] == self.feature_dim else obs[..., : self.feature_dim]  # without signal columns
        if self.reward_signals is None:
            rel = discriminator_relevance(self.scorer, feats, self.env.domain)
        else:
            rel = self.reward_signals.relevance(SignalInputs(feats, self.env.domain, self.scorer), mask.bool())
        return compute_reward(self.reward_kind, rel, actions.long(), mask.bool(), self.reward_threshold)

    def signal_needs(self) -> frozenset[str]:
        """The relevance signals' inputs (``logits``, ``other_logits``, ``reference``) the next call reads."""
        return self.signals.needs(self.calls)

    def refine(
        self, features: Tensor, is_negative: Tensor | None = None, signals: SignalRows | None = None
    ) -> RefinementResult:
        """Select rows out of ``features: [B, d]`` (detached: the agents do not train the backbone); ``signals``:
        the inputs :meth:`signal_needs` asked for."""
        selection = self.begin(features, is_negative, signals)
        for _ in range(self.E):
            state, mask = selection.next_state(self.env)
            self.record(selection, state, mask, self.agent.act(state, mask))
        return self.finish(selection, self.agent.update(optimize=False) if self.agent.joint_loss else None)

    @staticmethod
    def refine_together(refiners: Sequence[AgentRefiner], inputs: Sequence[tuple[Any, ...]]) -> list[RefinementResult]:
        """:meth:`refine` of several refiners, their agents acting and learning as one :class:`~agents.grouped.AgentGroup`.

        The same results as each refiner's own :meth:`refine` (the agents draw from their own
        generators in the same order), up to the rounding of the batched products where the math
        library adds them in another order (:mod:`agents.grouped`); agents that cannot be grouped
        (other algorithms, other shapes) refine one by one.
        """
        agents = [r.agent for r in refiners]
        same_shape = len({(r.E, tuple(x[0].shape)) for r, x in zip(refiners, inputs)}) == 1
        if not (same_shape and groupable(agents)):
            return [r.refine(*x) for r, x in zip(refiners, inputs)]
        group = AgentGroup(agents)  # type: ignore[arg-type]
        weights = group.weights()  # the group's Q-networks for the acts and the TD losses of this step
        halves = torch.stack([x[0].detach() for x in inputs])
        check_finite(halves)  # every half at once: one host synchronisation
        envs = AgentRefiner.env_group(refiners, inputs)
        if envs is not None and all(len(x) < 3 or x[2] is None for x in inputs):  # no signal inputs to hand in
            truth = None if inputs[0][1] is None else torch.stack([x[1] for x in inputs])
            obs = envs.load(halves.float(), truth).unbind()
            negatives = [None] * len(refiners) if truth is None else [env.candidate_is_negative for env in envs.envs]
            # the diagnostics' greedy choices of every agent in one network call
            diagnosing = all(r.diagnoses_now() for r in refiners)
            greedy = group.greedy(envs.obs, envs.mask, weights).unbind() if diagnosing else [None] * len(refiners)
            selections = [
                r.begin(x[0], x[1], loaded=(o, n), greedy=c)
                for r, x, o, n, c in zip(refiners, inputs, obs, negatives, greedy)
            ]
        else:
            truth = None
            selections = [r.begin(*x, finite_checked=True) for r, x in zip(refiners, inputs)]
        if envs is None:
            for _ in range(refiners[0].E):
                # stacking copies the envs' live buffers, which their steps zero in place: the states stay as acted on
                states = torch.stack([sel.obs for sel in selections])
                masks = torch.stack([r.env.mask for r in refiners])
                actions = group.act(states, masks, weights)
                for r, sel, state, mask, chosen in zip(refiners, selections, states, masks, actions):
                    r.record(sel, state, mask, chosen, checked=True)  # the group's masked choices of fresh sets
            totals = hits = None
            left: Sequence[Tensor] | Tensor = [r.env.mask for r in refiners]
            keeps: Sequence[Tensor | None] = [None] * len(refiners)
        else:
            totals, hits = AgentRefiner.select_together(refiners, selections, group, envs, weights)
            left = envs.mask
            keeps = left.reshape(len(refiners), -1).clone().unbind()  # every refiner's rows left in, one copy
        losses = group.td_losses(weights)
        counts = AgentRefiner.group_counts(selections, losses, left, totals, hits, truth)
        return [r.finish(sel, loss, c, k) for r, sel, loss, c, k in zip(refiners, selections, losses, counts, keeps)]

    @staticmethod
    def env_group(refiners: Sequence[AgentRefiner], inputs: Sequence[tuple[Any, ...]]) -> EnvGroup | None:
        """The refiners' envs as one :class:`~mmir_env.env_group.EnvGroup`, where they and their inputs allow it:
        rewards from eq. 3 alone and the same kind of ground truth in every half (else None: env by env)."""
        if any(r.reward_signals is not None for r in refiners):
            return None
        if len({x[1] is None for x in inputs}) != 1:
            return None
        return EnvGroup.of([r.env for r in refiners])

    @staticmethod
    def select_together(
        refiners: Sequence[AgentRefiner],
        selections: Sequence[Selection],
        group: AgentGroup,
        envs: EnvGroup,
        weights: SetQWeights,
    ) -> tuple[Tensor, Tensor | None]:
        """The ``E`` selections of a group of refiners whose envs step as one: what :meth:`record` does refiner by
        refiner, with the rewards summed and the planted negatives counted for the group at once.

        Returns each refiner's total reward (float64, summed in selection order) and planted negatives
        removed (None without ground truth), ``[G]`` each.
        """
        totals: Tensor | None = None
        hits: Tensor | None = None
        for _ in range(refiners[0].E):
            states, masks = envs.obs.clone(), envs.mask.clone()  # the states as acted on: the step zeroes rows in place
            actions = group.act(states, masks, weights)
            step = envs.step(actions)
            rows = step.relevance_rows.flatten(1).unbind()
            for sel, relevance, obs in zip(selections, rows, step.obs.unbind()):
                sel.obs = obs  # the refiner's env's live observation (a slice of the group's buffer)
                if sel.relevance is None:
                    sel.relevance = relevance
            group.observe(states, actions, step.rewards, step.terminated, envs.mask, masks)  # the replays copy
            reward = step.rewards.sum(-1).double()  # per refiner, as record() sums: float32 over the sets, then float64
            totals = reward if totals is None else totals + reward
            if step.is_negative is not None:
                hit = step.is_negative.sum(-1)
                hits = hit if hits is None else hits + hit
        assert totals is not None  # E >= 1
        return totals, hits

    def begin(
        self,
        features: Tensor,
        is_negative: Tensor | None,
        signals: SignalRows | None = None,
        finite_checked: bool = False,
        loaded: tuple[Tensor, Tensor | None] | None = None,
        greedy: Tensor | None = None,
    ) -> Selection:
        """Load the half-batch's candidate sets (and the signal inputs) into the env, and take the diagnostics that
        precede selection; ``finite_checked``: the caller has checked ``features`` for NaN and inf; ``loaded``: the
        env's group has loaded them already (its observation and ground truth ``[S, n_c]``, as the env holds them);
        ``greedy``: the agent's greedy choice on them, where the group took it (diagnostics steps)."""
        b, d = features.shape
        s = b // self.n_c
        stats: dict[str, float] = {}
        diagnose = self.diagnoses_now()
        # staleness re-scores replayed states: only where the reward can score them again
        can_rescore = diagnose and self.relabel_blocker is None and hasattr(self.agent, "replayed")
        replayed = self.agent.replayed(self.STALENESS_ROWS) if can_rescore else None
        if replayed is not None:  # rewards stored by earlier steps against the relevance model now
            obs_r, mask_r, actions_r, rewards_r = replayed
            stats["diag/staleness"] = staleness(rewards_r, self.current_reward(obs_r, mask_r, actions_r))
        if loaded is None:
            sets = features.detach().float().reshape(s, self.n_c, d)
            negatives = None if is_negative is None else is_negative.reshape(s, self.n_c)
            obs = self.env.load_candidate_sets(
                sets, negatives, finite_checked=finite_checked, **({} if signals is None else signals.env_inputs())
            )
        else:
            obs, negatives = loaded
            sets = obs  # report_relevance reads it only with reward signals, which an env group never loads
        if diagnose:
            stats.update(self.signals.aucs_now(negatives))
        first_mask = self.env.mask.clone() if diagnose else None
        if first_mask is None:
            greedy = None
        elif greedy is None and hasattr(self.agent, "greedy"):
            greedy = self.agent.greedy(obs, first_mask)
        selection = Selection(features, is_negative, negatives, stats, obs, first_mask, greedy)
        selection.relevance = self.signals.report_relevance(self.scorer, sets)
        return selection

    def diagnoses_now(self) -> bool:
        """Whether this call (the next :meth:`refine`) takes the diagnostics."""
        return self.signals.diagnoses(self.calls)

    def record(self, selection: Selection, state: Tensor, mask: Tensor, actions: Tensor, checked: bool = False) -> None:
        """One selection step: the env removes ``actions``' rows and rewards them; the agent stores the transitions.

        ``checked``: ``actions`` are int64 row indices on the device of one of the ``E`` selections from the
        sets :meth:`begin` loaded (the env's :meth:`~mmir_env.batched.BatchedRefinementEnv.step_unchecked`).
        """
        step = self.env.step_unchecked if checked else self.env.step
        obs, rewards, terminated, _, info = step(actions)
        selection.obs = obs
        if self.reward_signals is not None:
            if selection.reward_relevance is None:
                selection.reward_relevance = info["relevance_rows"]
        elif selection.relevance is None and "relevance_rows" in info:
            selection.relevance = info["relevance_rows"].reshape(-1)
        self.agent.observe(
            state, actions, rewards, None, terminated, self.env.mask, obs_masks=mask
        )  # the replay copies
        reward = rewards.sum().double()  # summed in float64 in selection order, as Python floats would be
        selection.reward_total = reward if selection.reward_total is None else selection.reward_total + reward
        if "is_negative" in info:
            hits = info["is_negative"].sum()
            selection.negatives_removed = (
                hits if selection.negatives_removed is None else selection.negatives_removed + hits
            )

    @staticmethod
    def counts(selection: Selection, loss: Tensor | None, mask: Tensor) -> Tensor:
        """``[5]`` float64 on the device: the selection's total reward, rows removed, planted negatives removed and
        present, and the TD loss (NaN without one); ``mask``: the env's selectable rows after the selection.

        Read to the host in one synchronisation (for a group of refiners: one for all of them).
        """
        zero = torch.zeros((), dtype=torch.float64, device=mask.device)
        return torch.stack(
            [
                zero if selection.reward_total is None else selection.reward_total,
                (~mask).sum().double(),
                zero if selection.negatives_removed is None else selection.negatives_removed.double(),
                zero if selection.is_negative is None else selection.is_negative.sum().double(),
                zero.new_full((), float("nan")) if loss is None else loss.detach().double(),
            ]
        )

    @staticmethod
    @torch.no_grad()
    def group_counts(
        selections: Sequence[Selection],
        losses: Sequence[Tensor],
        masks: Sequence[Tensor] | Tensor,
        totals: Tensor | None = None,
        hits: Tensor | None = None,
        is_negative: Tensor | None = None,
    ) -> list[list[float]]:
        """:meth:`counts` of a group's selections (each with its TD loss and env mask), read to the host together.

        ``masks``: one per selection, or stacked ``[G, ...]`` (an env group's); ``totals`` / ``hits``: the group's
        rewards and planted negatives removed, ``[G]``, where :meth:`select_together` counted them (else each
        selection's own); ``is_negative``: the selections' ground truth stacked, where the caller has it.
        Computed over the stacked group where every selection has the same kind of ground truth (one host
        synchronisation and a handful of kernels for all), else selection by selection.
        """
        truth = {(sel.is_negative is None, sel.negatives_removed is None and hits is None) for sel in selections}
        if totals is None and (len(truth) != 1 or any(sel.reward_total is None for sel in selections)):
            return torch.stack([AgentRefiner.counts(*x) for x in zip(selections, losses, masks)]).tolist()
        removed = (~(masks if isinstance(masks, Tensor) else torch.stack(list(masks)))).flatten(1).sum(1).double()
        no_truth, none_removed = next(iter(truth))
        if no_truth:
            present = removed.new_zeros(removed.shape)
        else:
            if is_negative is None:
                is_negative = torch.stack([sel.is_negative for sel in selections])  # type: ignore[misc]
            present = is_negative.flatten(1).sum(1).double()
        if hits is not None:
            negatives_removed = hits.double()
        elif not none_removed:
            negatives_removed = torch.stack([sel.negatives_removed for sel in selections]).double()  # type: ignore[misc]
        else:  # no ground truth (or none removed yet: counts() gives 0 alike)
            negatives_removed = removed.new_zeros(removed.shape)
        rewards = totals if totals is not None else torch.stack([sel.reward_total for sel in selections])  # type: ignore[misc]
        loss = torch.stack(list(losses)).double()  # no gradient: read for the logs
        return torch.stack([rewards, removed, negatives_removed, present, loss], dim=1).tolist()

    def finish(
        self,
        selection: Selection,
        loss: Tensor | None,
        counts: Sequence[float] | None = None,
        keep: Tensor | None = None,
    ) -> RefinementResult:
        """The keep mask and statistics of the finished selection; ``loss``: the agent's TD loss (joint-loss agents);
        ``counts``: :meth:`counts` already read to the host (else read here); ``keep``: the rows left in ``[B]``, where
        the refiners' group read them for all at once (else read here)."""
        sel, stats = selection, selection.stats
        s = sel.features.shape[0] // self.n_c
        keep = self.env.mask.reshape(-1).clone() if keep is None else keep
        if counts is None:
            counts = self.counts(sel, loss, self.env.mask).tolist()
        total_reward, removed, negatives_removed, negatives_present = (
            counts[0],
            int(counts[1]),
            int(counts[2]),
            int(counts[3]),
        )
        holding = self.learn_only or self.calls < self.warmup_steps
        self.calls += 1
        if holding:
            keep = torch.ones_like(keep)
        stats["replay"] = float(self.agent.replay_size())
        if loss is not None:
            stats["td_loss"] = counts[4]
        self._stats = stats
        if holding:  # the selections, for the agents' precision; nothing left L_adv
            stats["selected"], stats["selected_negatives"] = float(removed), float(negatives_removed)
            negatives_removed = 0
        p_target = None
        if sel.relevance is not None and sel.first_mask is not None:
            rows = sel.relevance.reshape(s, self.n_c) if sel.reward_relevance is None else sel.reward_relevance
            diag = set_diagnostics(
                rows, sel.first_mask, sel.greedy, ~self.env.mask, sel.negatives, self.reward_kind, self.reward_threshold
            )
            stats.update({f"diag/{k}": v for k, v in diag.items()})
            p_target = self._p_target(sel.features, sel.relevance)
        return RefinementResult(
            keep=keep,
            mean_reward=total_reward / (s * self.E),
            removed=0 if holding else removed,
            negatives_removed=negatives_removed,
            negatives_present=negatives_present,
            relevance=sel.relevance,
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

    @staticmethod
    def after_backward_together(refiners: Sequence[AgentRefiner]) -> None:
        """:meth:`after_backward` of several refiners: the optimizer steps of the joint-loss agents that learned in
        this backward as one :meth:`~agents.grouped.AgentGroup.optimizer_step` where they can be grouped."""
        learned = [r for r in refiners if r.learns_in_backward()]
        stepped: set[int] = set()
        if groupable([r.agent for r in learned]):
            AgentGroup([r.agent for r in learned]).optimizer_step()  # type: ignore[misc]
            stepped = {id(r) for r in learned}
        for refiner in refiners:
            if id(refiner) not in stepped:
                refiner.after_backward()

    def trainable_modules(self) -> list[nn.Module]:
        return list(self.agent.trainable_modules())

    def learns_in_backward(self) -> bool:
        """Whether this step's joint backward reaches the agent's Q-network (a joint-loss agent with a full enough replay)."""
        return bool(self.agent.joint_loss) and self.agent.ready()

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        return {**self.agent.state_dict(include_replay=include_replay), "refiner_calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.calls = int(state.pop("refiner_calls", 0))
        self.agent.load_state_dict(state)
