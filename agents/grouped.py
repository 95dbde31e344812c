"""Several step-wise DQN agents acting and learning as one batched computation.

Co-training runs four agents per step (an S- and a T-agent per modality), each on a handful of
candidate sets with a Q-network of a few thousand parameters: per agent, the work is dozens of tiny
kernels, and launching them costs more than computing them. :class:`AgentGroup` runs the agents'
Q-networks as one stacked network: the parameters of the ``G`` networks live in ``[G, ...]`` stacks
(:mod:`agents.shared_weights`; each agent's own parameters still receive their gradients and its
own optimizer steps them) and every layer is one batched matrix product over the group, so an act
or a TD loss of the four is one network call, not four.

What stays per agent, so that a group consumes exactly the random numbers of its agents acting
alone: exploration draws and replay sampling from each agent's own generator, replay buffers,
optimizers, target networks, counters and checkpoints. The optimizers' steps run as one fused Adam
call over the group's parameters (:meth:`AgentGroup.optimizer_step`), each optimizer's state its
own. The batched products give the bits of the agents' own ``nn.Linear`` calls where the math
library adds both in the same order (``tests/test_grouped_agents.py``), else they differ in rounding
only: the library picks its kernels by CPU and shape (with MKL on an AVX2 AMD EPYC, products of 5
or 10 rows, or of one output column, add in another order batched), and on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim.adam import adam

from agents.qnets import CandidateSetQNet, masked_q
from agents.replay_group import ReplayGroup
from agents.shared_weights import SharedSetQWeights, set_q_parameters
from agents.stepwise import StepwiseRefinementDQN


def groupable(agents: Sequence[object]) -> bool:
    """Whether ``agents`` can run as one :class:`AgentGroup`: two or more mmir-dqn agents with the same
    set Q-network shape (feature dim, width), candidate-set size, minibatch, loss and device."""
    if len(agents) < 2 or not all(type(a) is StepwiseRefinementDQN for a in agents):
        return False
    nets = [a.q_net for a in agents]  # type: ignore[attr-defined]
    if not all(type(n) is CandidateSetQNet for n in nets):
        return False
    keys = {
        (n.feature_dim, n.hidden_dim, a.n_c, a.batch_size, a.hyperparameters["loss"], a.device)  # type: ignore[attr-defined]
        for a, n in zip(agents, nets)
    }
    return len(keys) == 1


SetQWeights = tuple[Tensor, ...]  # the group's stacked layers, ready for batched products (see stack_set_q_weights)


def stack_set_q_weights(nets: Sequence[CandidateSetQNet]) -> SetQWeights:
    """The ``G`` networks' layers stacked over the group (differentiable: each network's parameters get their gradients).

    A snapshot: valid until an optimizer steps the networks. Computing it once per step serves
    the group's acts and its TD losses alike.
    """
    return arrange_set_q_weights([torch.stack(p) for p in zip(*(set_q_parameters(n) for n in nets))])


def arrange_set_q_weights(stacks: Sequence[Tensor]) -> SetQWeights:
    """The eight ``[G, ...]`` layer stacks (w1, b1, ..., w4, b4) as views for :func:`stacked_set_q`'s products."""
    w1, b1, w2, b2, w3, b3, w4, b4 = stacks
    # [G, 1, out] biases and [G, in, out] weights for baddbmm; the last layer stays [G, 1, in]
    return (
        b1.unsqueeze(1),
        w1.transpose(1, 2),
        b2.unsqueeze(1),
        w2.transpose(1, 2),
        b3.unsqueeze(1),
        w3.transpose(1, 2),
        b4.unsqueeze(-1),
        w4,
    )


def stacked_set_q(nets: Sequence[CandidateSetQNet] | SetQWeights, obs: Tensor, mask: Tensor) -> Tensor:
    """``G`` :class:`~agents.qnets.CandidateSetQNet` s (or their :func:`stack_set_q_weights`) on their own inputs at once.

    ``obs: [G, B, n_c, d]``, ``mask: [G, B, n_c]`` -> Q ``[G, B, n_c]``; the same arithmetic as
    ``CandidateSetQNet.forward`` with every ``nn.Linear`` a batched product over the group.
    """
    weights = nets if isinstance(nets, tuple) else stack_set_q_weights(nets)  # type: ignore[arg-type]
    b1, w1, b2, w2, b3, w3, b4, w4 = weights
    g, b, n_c, d = obs.shape
    rows = obs.reshape(g, b * n_c, d)
    hidden = torch.relu(torch.baddbmm(b1, rows, w1))
    phi = torch.relu(torch.baddbmm(b2, hidden, w2)).reshape(g, b, n_c, -1)
    weights_rows = mask.unsqueeze(-1).to(phi.dtype)
    context = (phi * weights_rows).sum(-2) / weights_rows.sum(-2).clamp_min(1.0)
    joint = torch.cat([phi, context.unsqueeze(-2).expand_as(phi)], dim=-1).reshape(g, b * n_c, -1)
    hidden = torch.relu(torch.baddbmm(b3, joint, w3))
    # one output per row: W h^T, the order in which nn.Linear's matrix-vector product adds (the same bits)
    return torch.baddbmm(b4, w4, hidden.transpose(1, 2)).reshape(g, b, n_c)


class AgentGroup:
    """``G`` :class:`~agents.stepwise.StepwiseRefinementDQN` agents whose act and TD loss run as one network call.

    Each agent keeps its generator, replay, optimizer and target network: ``act`` and ``td_losses``
    give exactly what the agents' own :meth:`act` and :meth:`update` would (see the module docstring).
    """

    def __init__(self, agents: Sequence[StepwiseRefinementDQN]) -> None:
        if not groupable(agents):
            raise ValueError("an AgentGroup needs two or more mmir-dqn agents with the same set Q-network shape")
        self.agents = list(agents)

    def weights(self) -> SetQWeights:
        """The group's Q-networks as one: pass it to :meth:`act` and :meth:`td_losses` of the same step.

        Views of the stacks the networks' parameters live in (:class:`~agents.shared_weights.SharedSetQWeights`,
        made on first use), else a stack of them (:func:`stack_set_q_weights`: under ``torch.distributed``),
        which is stale once the agents' optimizers have stepped.
        """
        nets = [a.q_net for a in self.agents]
        shared = SharedSetQWeights.of(nets)
        return stack_set_q_weights(nets) if shared is None else arrange_set_q_weights(shared.stacks)

    @torch.no_grad()
    def act(self, obs: Tensor, mask: Tensor, weights: SetQWeights | None = None) -> Tensor:
        """Masked epsilon-greedy actions ``[G, B]`` for ``obs: [G, B, n_c, d]`` and ``mask: [G, B, n_c]``; counts selections."""
        draws = [agent.exploration_draws(m) for agent, m in zip(self.agents, mask)]
        explore = torch.stack([e for e, _ in draws])
        random_actions = torch.stack([r for _, r in draws])
        if bool(explore.all()):  # nobody acts greedily: no Q forward
            actions = random_actions
        else:
            actions = torch.where(explore, random_actions, self.greedy(obs, mask, weights))
        for agent in self.agents:
            agent.selections += obs.shape[1]
        return actions

    @torch.no_grad()
    def greedy(self, obs: Tensor, mask: Tensor, weights: SetQWeights | None = None) -> Tensor:
        """Each agent's :meth:`~agents.stepwise.StepwiseRefinementDQN.greedy` choice ``[G, B]`` at once: no exploration,
        counting or random draw (diagnostics)."""
        q = stacked_set_q(self.weights() if weights is None else weights, obs.float(), mask.bool())
        return masked_q(q, mask.bool()).argmax(dim=-1)

    def td_losses(self, weights: SetQWeights | None = None) -> list[Tensor]:
        """Each agent's eq. 6 TD loss (attached to its Q-network's graph), a zero tensor for an agent not yet ready.

        ``weights``: this step's :meth:`weights` (taken with gradients enabled), else they are taken here.
        """
        ready = [i for i, agent in enumerate(self.agents) if agent.ready()]
        if not ready:
            return [torch.zeros((), device=agent.device) for agent in self.agents]
        if len(ready) == 1:
            (i,) = ready
            batch, target = self.agents[i].td_batch()
            loss = self.agents[i].td_error(self.agents[i].q_net(batch.obs, batch.mask), batch.actions, target)
            return self._in_place_of_ready(ready, [loss])
        replays = self.replays() if len(ready) == len(self.agents) else None
        if replays is not None:
            obs, mask, actions, targets = self._td_batches(replays)
        else:
            batches = [self.agents[i].td_batch() for i in ready]
            obs = torch.stack([batch.obs for batch, _ in batches])
            mask = torch.stack([batch.mask for batch, _ in batches])
            actions = torch.stack([batch.actions for batch, _ in batches])
            targets = torch.stack([target for _, target in batches])
        if len(ready) < len(self.agents):
            # the learning agents' own stack: the others' parameters get no gradient, not a zero one
            weights = stack_set_q_weights([self.agents[i].q_net for i in ready])
        elif weights is None:
            weights = self.weights()
        q = stacked_set_q(weights, obs, mask)
        # one gather and one loss for the group: each agent's mean over its minibatch, the bits of its td_error
        return self._in_place_of_ready(ready, self.agents[ready[0]].td_errors(q, actions, targets).unbind())

    def replays(self) -> ReplayGroup | None:
        """The agents' replay buffers as one :class:`~agents.replay_group.ReplayGroup` (None where they cannot be)."""
        return ReplayGroup.of([agent.replay for agent in self.agents])

    def observe(
        self, states: Tensor, actions: Tensor, rewards: Tensor, dones: Tensor, masks: Tensor, obs_masks: Tensor
    ) -> None:
        """Each agent's :meth:`~agents.dqn.RefinementDQN.observe` of its transitions, every argument ``[G, B, ...]``
        (``masks``: the next states' selectable rows; ``obs_masks``: the states'): one write per field for the group
        where the replays form a :class:`~agents.replay_group.ReplayGroup`."""
        replays = self.replays()
        if replays is None:
            for agent, *transitions in zip(self.agents, states, actions, rewards, dones, masks, obs_masks):
                s, a, r, d, m, o = transitions
                agent.observe(s, a, r, None, d, m, obs_masks=o)
            return
        first = self.agents[0]
        if tuple(states.shape[2:]) != (first.n_c, first.feature_dim):
            raise ValueError(
                f"states must be [G, B, n_c={first.n_c}, d={first.feature_dim}], got {tuple(states.shape)}"
            )
        # float32 first, as each agent's observe converts: the storage dtype then rounds the same values
        replays.add(states.to(first.device, torch.float32), obs_masks, actions, rewards, masks, dones)

    def _td_batches(self, replays: ReplayGroup) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every agent's :meth:`~agents.dqn.RefinementDQN.td_batch` from the group's replays at once:
        ``(obs, mask, actions, targets)``, each ``[G, B, ...]``."""
        agents = self.agents
        batch = replays.sample(agents[0].batch_size, [agent.replay_generator() for agent in agents])
        with torch.no_grad():
            plain = all(agent.reward_relabel is None for agent in agents)
            # the targets are the rewards when no agent re-scores them and none bootstraps (each agent's own check)
            if plain and (all(agent.gamma <= 0 for agent in agents) or bool(batch.dones.all())):
                targets = batch.rewards
            else:
                targets = torch.stack([agent.td_target(batch.member(i)) for i, agent in enumerate(agents)])
        return batch.obs, batch.mask, batch.actions, targets

    def optimizer_step(self) -> None:
        """Each agent's :meth:`~agents.dqn.RefinementDQN.optimizer_step` after the joint backward, the ``G`` Adam
        updates as one fused call where the optimizers allow it (:func:`adams_together_blocker`), else one by one."""
        optimizers = [agent.optimizer for agent in self.agents]
        clipping = any(agent.hyperparameters["max_grad_norm"] is not None for agent in self.agents)
        if clipping or adams_together_blocker(optimizers) is not None:
            for agent in self.agents:
                agent.optimizer_step()
            return
        step_adams_together(optimizers)
        for agent in self.agents:
            agent.count_update()

    def _in_place_of_ready(self, ready: list[int], losses: Sequence[Tensor]) -> list[Tensor]:
        """One loss per agent: ``losses`` for the ``ready`` agents, a zero tensor for the others."""
        by_agent = dict(zip(ready, losses))
        return [
            by_agent[i] if i in by_agent else torch.zeros((), device=agent.device)
            for i, agent in enumerate(self.agents)
        ]


# the per-group settings the fused kernel takes once for all tensors: every optimizer must agree on them
_ADAM_SETTINGS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "capturable", "differentiable")


def adams_together_blocker(optimizers: Sequence[torch.optim.Optimizer]) -> str | None:
    """Why ``optimizers`` cannot step as one fused Adam call (:func:`step_adams_together`), or None when they can:
    each a plain fused ``torch.optim.Adam`` with one parameter group, no step hooks, the same settings."""
    for optimizer in optimizers:
        if type(optimizer) is not torch.optim.Adam:
            return f"{type(optimizer).__name__} is not torch.optim.Adam"
        if len(optimizer.param_groups) != 1 or not optimizer.param_groups[0]["fused"]:
            return "an optimizer has several parameter groups or is not fused"
        if getattr(optimizer, "_optimizer_step_pre_hooks", None) or getattr(
            optimizer, "_optimizer_step_post_hooks", None
        ):
            return "an optimizer has step hooks"
        if getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None:
            return "an optimizer is driven by a gradient scaler"
    first = optimizers[0].param_groups[0]
    for optimizer in optimizers[1:]:
        group = optimizer.param_groups[0]
        differing = [key for key in _ADAM_SETTINGS if group.get(key) != first.get(key)]
        if differing:
            return f"the optimizers' {', '.join(differing)} differ"
    return None


@torch.no_grad()
def step_adams_together(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Step fused Adam optimizers (:func:`adams_together_blocker` None) as one call of ``torch.optim.adam.adam``.

    Adam updates every element from its own gradient and moments, so the one call leaves every
    parameter and every optimizer's state exactly as the optimizers' own ``step()`` would: each
    optimizer's own lazy state set-up (``_init_group``) gathers its tensors, one fused kernel
    updates them all.
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    exp_avgs: list[Tensor] = []
    exp_avg_sqs: list[Tensor] = []
    max_exp_avg_sqs: list[Tensor] = []
    steps: list[Tensor] = []
    has_complex = False
    for optimizer in optimizers:
        has_complex |= bool(
            optimizer._init_group(  # type: ignore[attr-defined]
                optimizer.param_groups[0], params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
            )
        )
    if not params:
        return
    group = optimizers[0].param_groups[0]
    beta1, beta2 = group["betas"]
    extra = {"decoupled_weight_decay": group["decoupled_weight_decay"]} if "decoupled_weight_decay" in group else {}
    adam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        amsgrad=group["amsgrad"],
        has_complex=has_complex,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        foreach=group["foreach"],
        capturable=group["capturable"],
        differentiable=group["differentiable"],
        fused=True,
        **extra,
    )


__all__ = [
    "AgentGroup",
    "adams_together_blocker",
    "step_adams_together",
    "SetQWeights",
    "groupable",
    "stack_set_q_weights",
    "stacked_set_q",
]
