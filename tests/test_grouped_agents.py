"""The four agents as one batched network: the same actions, losses, gradients and runs as each agent alone."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from cotrain_helpers import toy_config, toy_datasets, toy_model

import agents.grouped as grouped_module
from agents.grouped import AgentGroup, adams_together_blocker, groupable, stacked_set_q, step_adams_together
from agents.replay_group import ReplayGroup
from agents.stepwise import make_stepwise_agent
from experiments.cotrain import CoTrainer
from experiments.refiners.agent import AgentRefiner
from mmir_env.env_group import EnvGroup


def agents(n: int = 4, feature_dim: int = 16, **kw) -> list:
    return [
        make_stepwise_agent(
            "mmir-dqn", n_c=5, feature_dim=feature_dim, device="cpu", seed=i, batch_size=8, learning_starts=6, **kw
        )
        for i in range(n)
    ]


def fill(agent, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        obs = torch.randn(2, 5, agent.feature_dim, generator=g)
        mask = torch.ones(2, 5, dtype=torch.bool)
        actions = agent.act(obs, mask)
        rewards = torch.randn(2, generator=g)
        agent.observe(obs, actions, rewards, None, torch.ones(2, dtype=torch.bool), mask, obs_masks=mask)


def test_stacked_q_networks_give_each_networks_own_bits_and_gradients():
    alone, grouped = agents(), agents()
    obs = torch.randn(4, 3, 5, 16)
    mask = torch.rand(4, 3, 5) > 0.3
    mask[..., 0] = True
    q_alone = torch.stack([a.q_net(o, m) for a, o, m in zip(alone, obs, mask)])
    q_grouped = stacked_set_q([a.q_net for a in grouped], obs, mask)
    assert torch.equal(q_alone, q_grouped)
    (q_alone**2).sum().backward()
    (q_grouped**2).sum().backward()
    for a, b in zip(alone, grouped):
        for p, q in zip(a.q_net.parameters(), b.q_net.parameters()):
            assert torch.equal(p.grad, q.grad)


def test_a_group_acts_as_its_agents_would_alone():
    alone = agents()
    grouped = copy.deepcopy(alone)
    obs = torch.randn(4, 3, 5, 16)
    mask = torch.rand(4, 3, 5) > 0.4
    mask[..., 2] = True
    for _ in range(3):
        expected = torch.stack([a.act(o, m) for a, o, m in zip(alone, obs, mask)])
        assert torch.equal(AgentGroup(grouped).act(obs, mask), expected)
    for a, b in zip(alone, grouped):
        assert a.selections == b.selections == 9
        assert torch.equal(a.generator.get_state(), b.generator.get_state())  # the same random numbers drawn


@pytest.mark.parametrize("fills", [(5, 5, 5, 5), (2, 5, 0, 4)])  # learning_starts = 6 transitions
def test_a_group_learns_as_its_agents_would_alone_also_when_some_are_not_ready(fills):
    alone = agents()
    for i, (agent, steps) in enumerate(zip(alone, fills)):
        fill(agent, steps, seed=i)
    grouped = copy.deepcopy(alone)
    expected = [a.update(optimize=False) for a in alone]
    losses = AgentGroup(grouped).td_losses()
    assert [bool(a.ready()) for a in grouped] == [len(a.replay) >= 6 for a in alone]
    for want, got in zip(expected, losses):
        assert torch.equal(want, got)
    sum(expected).backward()
    sum(losses).backward()
    for a, b in zip(alone, grouped):
        for p, q in zip(a.q_net.parameters(), b.q_net.parameters()):
            assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)
        assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_agents_of_other_shapes_or_algorithms_are_not_grouped():
    assert groupable(agents(2))
    assert not groupable(agents(1))
    assert not groupable([*agents(1, feature_dim=16), *agents(1, feature_dim=8)])
    assert not groupable(agents(2, q_net="flat"))
    with pytest.raises(ValueError, match="two or more mmir-dqn agents"):
        AgentGroup(agents(2, q_net="flat"))


def _metrics(path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in path.read_text().splitlines()]


def _products_give_linears_bits(nets, n_c: int, d: int, max_sets: int) -> bool:
    """Whether this machine's batched products give each network's own ``nn.Linear`` bits for 1..``max_sets`` sets.

    The math library picks its kernels by CPU and by shape: on some CPUs (seen with MKL on an AVX2
    AMD EPYC) a product of 5 or 10 rows, or of one output column, adds in another order batched than
    alone, and the grouped run then differs from the one-by-one run in the last bits.
    """
    g = torch.Generator().manual_seed(0)
    for sets in range(1, max_sets + 1):
        obs = torch.randn(len(nets), sets, n_c, d, generator=g)
        mask = torch.rand(len(nets), sets, n_c, generator=g) > 0.3
        with torch.no_grad():
            grouped = stacked_set_q(nets, obs, mask)
            alone = torch.stack([net(o, m) for net, o, m in zip(nets, obs, mask)])
        if not torch.equal(grouped, alone):
            return False
    return True


def _agree_to_rounding(a, b, rel: float = 1e-5) -> bool:
    """Whether ``a`` and ``b`` (JSON values) are equal but for floats within ``rel`` of each other."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_agree_to_rounding(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_agree_to_rounding(x, y, rel) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("overrides", [{}, {"E": 2, "gamma": 0.9}, {"reward": "margin"}, {"reward": "rank"}])
def test_co_training_with_the_agents_grouped_is_the_run_of_agents_one_by_one(tmp_path, monkeypatch, overrides):
    runs = {}
    group_steps, replay_adds, replay_samples, adam_steps = [], [], [], []
    step, add, sample = EnvGroup.step, ReplayGroup.add, ReplayGroup.sample
    monkeypatch.setattr(EnvGroup, "step", lambda self, actions: group_steps.append(1) or step(self, actions))
    monkeypatch.setattr(ReplayGroup, "add", lambda self, *a: replay_adds.append(1) or add(self, *a))
    monkeypatch.setattr(ReplayGroup, "sample", lambda self, *a: replay_samples.append(1) or sample(self, *a))
    monkeypatch.setattr(grouped_module, "step_adams_together", lambda o: adam_steps.append(1) or step_adams_together(o))
    for grouped in (True, False):
        cfg = toy_config(tmp_path / str(grouped))
        cfg.env.E = overrides.get("E", cfg.env.E)
        cfg.env.reward = overrides.get("reward", cfg.env.reward)
        cfg.agents.gamma = overrides.get("gamma", cfg.agents.gamma)
        if not grouped:  # every refiner on its own: the loop's path for refiners without refine_together
            monkeypatch.delattr(AgentRefiner, "refine_together")
            monkeypatch.delattr(AgentRefiner, "after_backward_together")
        trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
        runs[grouped] = trainer.run()
        runs[grouped]["metrics"] = _metrics(tmp_path / str(grouped) / "toy" / "metrics.jsonl")
        refiners = list(trainer.refiners.values())
        weights = [r.agent.q_net.row_encoder[0].weight for r in refiners]
        one_storage = len({w.untyped_storage().data_ptr() for w in weights}) == 1
        if grouped:  # the envs stepped, the replays wrote and sampled, the optimizers stepped as groups
            assert group_steps and replay_adds and replay_samples and adam_steps
            assert one_storage  # the Q-networks' parameters live in the group's stacks
            used = (len(group_steps), len(replay_adds), len(replay_samples), len(adam_steps))
            sets = max(cfg.stage2.batch_size // 2 // refiners[0].n_c, cfg.agents.batch_size)
            same_bits = _products_give_linears_bits(
                [r.agent.q_net for r in refiners], refiners[0].n_c, refiners[0].agent.feature_dim, sets
            )
        else:
            assert (len(group_steps), len(replay_adds), len(replay_samples), len(adam_steps)) == used
            assert not one_storage
    compared = ("metrics", "evaluations")
    if same_bits:
        assert all(runs[True][key] == runs[False][key] for key in compared)
    else:  # the same run up to the products' last bits
        assert all(_agree_to_rounding(runs[True][key], runs[False][key]) for key in compared)
    assert any(r.get("dqn", 0.0) > 0 for r in runs[True]["metrics"])  # the agents learned


def test_a_group_refuses_halves_with_nan_features_as_each_env_would(tmp_path):
    trainer = CoTrainer(toy_config(tmp_path), datasets=toy_datasets(), model=toy_model())
    trainer.begin_stage(2)
    refiners = list(trainer.refiners.values())
    d = refiners[0].feature_dim
    halves = [torch.randn(10, d) for _ in refiners]
    halves[2][3, 1] = float("nan")
    with pytest.raises(ValueError, match="features contains NaN or inf values"):
        AgentRefiner.refine_together(refiners, [(h, None) for h in halves])
    with pytest.raises(ValueError, match="features contains NaN or inf values"):
        refiners[2].refine(halves[2])  # one refiner alone: its env's own check


def _learn_alone_and_grouped(alone: list, grouped: list) -> None:
    """One joint-loss update of each agent alone (its own optimizer step) and of the copies as a group."""
    sum(a.update(optimize=False) for a in alone).backward()
    for agent in alone:
        agent.optimizer_step()
    group = AgentGroup(grouped)
    sum(group.td_losses()).backward()
    group.optimizer_step()
    for agent in (*alone, *grouped):
        agent.optimizer.zero_grad(set_to_none=True)


def test_a_groups_optimizer_step_leaves_each_agent_as_its_own_step_would():
    alone = agents(target_update_interval=12)
    for i, agent in enumerate(alone):
        fill(agent, 5, seed=i)
    grouped = copy.deepcopy(alone)
    assert adams_together_blocker([a.optimizer for a in grouped]) is None
    for _ in range(3):  # the first step sets up the optimizers' state, the later ones update it
        _learn_alone_and_grouped(alone, grouped)
        for agent in (*alone, *grouped):  # selections move on: the target networks sync when due
            agent.selections += 5
    for a, b in zip(alone, grouped):
        assert (a.updates, a._last_sync) == (b.updates, b._last_sync) == (3, 15)
        for p, q in zip(
            [*a.q_net.parameters(), *a.q_net_target.parameters()], [*b.q_net.parameters(), *b.q_net_target.parameters()]
        ):
            assert torch.equal(p, q)
        want, got = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert want.keys() == got.keys()
        for key in want:
            assert all(torch.equal(want[key][name], got[key][name]) for name in ("step", "exp_avg", "exp_avg_sq"))


def test_optimizers_that_disagree_step_one_by_one_and_the_blocker_says_why():
    alone = agents(2)
    alone[1].optimizer.param_groups[0]["lr"] = 0.5
    for i, agent in enumerate(alone):
        fill(agent, 5, seed=i)
    grouped = copy.deepcopy(alone)
    assert adams_together_blocker([a.optimizer for a in grouped]) == "the optimizers' lr differ"
    _learn_alone_and_grouped(alone, grouped)
    for a, b in zip(alone, grouped):
        assert all(torch.equal(p, q) for p, q in zip(a.q_net.parameters(), b.q_net.parameters()))
    sgd = torch.optim.SGD(alone[0].q_net.parameters(), lr=0.1)
    assert adams_together_blocker([sgd, alone[1].optimizer]) == "SGD is not torch.optim.Adam"


def test_a_group_stores_transitions_as_each_agent_would_alone():
    alone = agents()
    grouped = copy.deepcopy(alone)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        states = torch.randn(4, 3, 5, 16, generator=g)
        obs_masks = torch.rand(4, 3, 5, generator=g) > 0.2
        masks = obs_masks & (torch.rand(4, 3, 5, generator=g) > 0.2)
        actions = torch.randint(5, (4, 3), generator=g)
        rewards, dones = torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) > 0.5
        for i, agent in enumerate(alone):
            agent.observe(states[i], actions[i], rewards[i], None, dones[i], masks[i], obs_masks=obs_masks[i])
        AgentGroup(grouped).observe(states, actions, rewards, dones, masks, obs_masks)
    assert grouped[0].replay.group is not None and alone[0].replay.group is None
    for a, b in zip(alone, grouped):
        want, got = a.replay.state_dict(), b.replay.state_dict()
        assert want.keys() == got.keys()
        assert all(
            torch.equal(want[k], got[k]) if isinstance(want[k], torch.Tensor) else want[k] == got[k] for k in want
        )
