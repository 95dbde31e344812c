"""The four agents as one batched network: the same actions, losses, gradients and runs as each agent alone."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from cotrain_helpers import toy_config, toy_datasets, toy_model

from agents.grouped import AgentGroup, groupable, stacked_set_q
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


@pytest.mark.parametrize("overrides", [{}, {"E": 2, "gamma": 0.9}, {"reward": "margin"}, {"reward": "rank"}])
def test_co_training_with_the_agents_grouped_is_the_run_of_agents_one_by_one(tmp_path, monkeypatch, overrides):
    runs = {}
    group_steps = []
    step = EnvGroup.step
    monkeypatch.setattr(EnvGroup, "step", lambda self, actions: group_steps.append(1) or step(self, actions))
    for grouped in (True, False):
        cfg = toy_config(tmp_path / str(grouped))
        cfg.env.E = overrides.get("E", cfg.env.E)
        cfg.env.reward = overrides.get("reward", cfg.env.reward)
        cfg.agents.gamma = overrides.get("gamma", cfg.agents.gamma)
        if not grouped:  # every refiner on its own: the loop's path for refiners without refine_together
            monkeypatch.delattr(AgentRefiner, "refine_together")
        trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
        runs[grouped] = trainer.run()
        runs[grouped]["metrics"] = _metrics(tmp_path / str(grouped) / "toy" / "metrics.jsonl")
        if grouped:
            assert group_steps, "the grouped run stepped its envs as one EnvGroup"
    assert runs[True]["metrics"] == runs[False]["metrics"]
    assert runs[True]["evaluations"] == runs[False]["evaluations"]
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
