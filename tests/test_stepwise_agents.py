"""Step-wise agents (co-training's act/observe/update protocol): mmir-dqn and the SB3 adapters."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from agents.dqn import RefinementDQN
from agents.stepwise import (
    COTRAIN_DQN_PINNED,
    STEPWISE_AGENTS,
    StepwiseAgent,
    StepwiseRefinementDQN,
    make_stepwise_agent,
    register_stepwise_agent,
    registered_stepwise_agents,
)

AGENTS = ["mmir-dqn", "dqn", "qrdqn"]
N_C, D, B = 5, 8, 16


def make(name: str, seed: int = 0, **kwargs) -> StepwiseAgent:
    hp = {"batch_size": 32, "learning_starts": 32, "buffer_size": 4_096, **kwargs}
    if name == "qrdqn":  # sb3-contrib's 200 quantiles: ~0.1 s per update on one thread (the pairwise loss)
        hp.setdefault("policy_kwargs", {"n_quantiles": 25})
    return make_stepwise_agent(name, n_c=N_C, feature_dim=D, device="cpu", seed=seed, **hp)


def candidate_sets(gen: torch.Generator, b: int = B) -> torch.Tensor:
    """Random sets whose row 0 carries a marker, so that a permutation-equivariant Q-net can tell it apart."""
    obs = torch.randn((b, N_C, D), generator=gen)
    obs[:, 0, 0] = 2.0
    obs[:, 1:, 0] = -2.0
    return obs


def step(agent: StepwiseAgent, gen: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One E=1 selection step: act, reward +1 for row 0 and -1 otherwise, observe (terminal)."""
    obs = candidate_sets(gen)
    mask = torch.ones((B, N_C), dtype=torch.bool) if mask is None else mask
    actions = agent.act(obs, mask)
    rewards = torch.where(actions == 0, 1.0, -1.0)
    next_mask = mask.clone()
    next_mask[torch.arange(B), actions] = False
    agent.observe(obs, actions, rewards, None, torch.ones(B, dtype=torch.bool), next_mask, obs_masks=mask)
    return actions


def train_step(agent: StepwiseAgent) -> torch.Tensor:
    """What co-training does with each kind of agent."""
    if agent.joint_loss:
        for module in agent.trainable_modules():
            module.zero_grad(set_to_none=True)
        loss = agent.update(optimize=False)
        if loss.requires_grad:
            loss.backward()
            agent.optimizer_step()
        return loss.detach()
    return agent.update()


def parameters(agent: StepwiseAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.q_net.parameters()]


@pytest.mark.parametrize("name", AGENTS)
def test_agents_satisfy_the_protocol(name):
    agent = make(name)
    assert isinstance(agent, StepwiseAgent)
    assert isinstance(agent.joint_loss, bool)
    if name == "mmir-dqn":
        assert agent.joint_loss and type(agent) is StepwiseRefinementDQN
        assert agent.trainable_modules() == [agent.q_net]
    else:
        assert not agent.joint_loss and agent.trainable_modules() == []


def test_plain_refinement_dqn_lacks_the_additions():
    assert not isinstance(RefinementDQN(n_c=N_C, feature_dim=D, device="cpu", seed=0), StepwiseAgent)


@pytest.mark.parametrize("name", AGENTS)
@pytest.mark.parametrize("epsilon", [0.0, 0.5, 1.0])
def test_act_never_selects_a_masked_row(name, epsilon):
    agent = make(name, epsilon=epsilon)
    gen = torch.Generator().manual_seed(1)
    masks = torch.tensor(
        [
            [1, 0, 0, 0, 0],  # only one choice
            [0, 0, 0, 0, 1],
            [0, 1, 0, 1, 0],
            [1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1],
            [1, 0, 1, 0, 1],
            [0, 0, 1, 0, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    ).repeat(2, 1)
    for deterministic in (False, True):
        for _ in range(25):
            obs = torch.randn((B, N_C, D), generator=gen)  # masked rows keep non-zero features on purpose
            before = agent.selections
            actions = agent.act(obs, masks, deterministic=deterministic)
            assert actions.shape == (B,) and actions.dtype == torch.long
            assert bool(masks[torch.arange(B), actions].all()), (deterministic, actions)
            assert agent.selections == before + B
    assert torch.equal(agent.act(torch.randn((B, N_C, D), generator=gen), masks)[:2], torch.tensor([0, 4]))


@pytest.mark.parametrize("name", AGENTS)
def test_ready_then_update_trains_the_q_network(name):
    agent = make(name, epsilon=1.0)
    gen = torch.Generator().manual_seed(2)
    assert not agent.ready() and agent.replay_size() == 0
    assert float(train_step(agent)) == 0.0  # nothing stored: a zero loss, no step
    step(agent, gen)
    assert agent.replay_size() == B and not agent.ready()  # learning_starts=32 > 16
    assert float(train_step(agent)) == 0.0
    step(agent, gen)
    assert agent.replay_size() == 2 * B and agent.ready()
    before = parameters(agent)
    loss = train_step(agent)
    assert loss.ndim == 0 and bool(torch.isfinite(loss)) and float(loss) > 0
    after = parameters(agent)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    if not agent.joint_loss:
        with pytest.raises(ValueError, match="own optimizer step"):
            agent.update(optimize=False)
        with pytest.raises(ValueError, match="joint_loss=False"):
            agent.optimizer_step()
    else:
        assert agent.update(optimize=False).requires_grad


@pytest.mark.parametrize("name", AGENTS)
def test_learns_that_row_zero_pays(name):
    agent = make(name, epsilon=1.0, batch_size=64, learning_starts=64)
    gen = torch.Generator().manual_seed(3)
    for _ in range(300):
        step(agent, gen)
        train_step(agent)
    hits = (
        torch.cat(
            [
                agent.act(candidate_sets(gen), torch.ones((B, N_C), dtype=torch.bool), deterministic=True)
                for _ in range(8)
            ]
        )
        .eq(0)
        .float()
        .mean()
    )
    assert float(hits) > 0.9, float(hits)


@pytest.mark.parametrize("name", AGENTS)
def test_state_dict_round_trip(name):
    agent = make(name, epsilon=0.5)
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        step(agent, gen)
        train_step(agent)
    buf = io.BytesIO()
    torch.save(agent.state_dict(include_replay=True), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = make(name, seed=123, epsilon=0.5)
    assert any(not torch.equal(a, b) for a, b in zip(parameters(agent), parameters(fresh)))
    fresh.load_state_dict(state)
    assert fresh.replay_size() == agent.replay_size() == 4 * B
    probe = candidate_sets(torch.Generator().manual_seed(5), b=64)
    mask = torch.rand((64, N_C), generator=torch.Generator().manual_seed(6)) > 0.3
    mask[:, 0] = True
    assert torch.equal(agent.act(probe, mask, deterministic=True), fresh.act(probe, mask, deterministic=True))
    assert torch.equal(agent.act(probe, mask), fresh.act(probe, mask))  # exploration RNG restored too
    assert float(train_step(agent)) == float(train_step(fresh))  # replay and its sampling RNG restored
    assert float(train_step(agent)) == float(train_step(fresh))
    assert all(torch.equal(a, b) for a, b in zip(parameters(agent), parameters(fresh)))

    without = agent.state_dict(include_replay=False)
    other = make(name, seed=7)
    other.load_state_dict(without)
    assert other.replay_size() == 0 and not other.ready()


@pytest.mark.parametrize("q_net", ["set", "flat"])
def test_mmir_dqn_factory_is_domain_refiners_construction(q_net):
    hp = dict(
        lr=3e-4,
        gamma=0.8,
        epsilon=0.3,
        buffer_size=512,
        batch_size=16,
        learning_starts=16,
        target_update_interval=48,
        loss="huber",
        q_net=q_net,
    )
    device = torch.device("cpu")
    built = make_stepwise_agent("mmir-dqn", n_c=N_C, feature_dim=D, device=device, seed=11, **hp)
    direct = RefinementDQN(
        n_c=N_C,
        feature_dim=D,
        q_net=hp["q_net"],
        learning_rate=hp["lr"],
        gamma=hp["gamma"],
        epsilon=hp["epsilon"],
        buffer_size=hp["buffer_size"],
        batch_size=hp["batch_size"],
        learning_starts=hp["learning_starts"],
        target_update_interval=hp["target_update_interval"],
        loss=hp["loss"],
        device=device,
        seed=11,
        **COTRAIN_DQN_PINNED,  # co-training pins what it does not set, so standalone defaults may change
    )
    assert built.hyperparameters == direct.hyperparameters
    for (na, a), (nb, b) in zip(built.q_net.named_parameters(), direct.q_net.named_parameters(), strict=True):
        assert na == nb and torch.equal(a, b)
    gen_a, gen_b = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    for _ in range(3):  # same draws, same losses, same steps
        assert torch.equal(step(built, gen_a), step(direct, gen_b))
        loss_a, loss_b = built.update(optimize=False), direct.update(optimize=False)
        assert torch.equal(loss_a.detach(), loss_b.detach())
        loss_a.backward()
        loss_b.backward()
        built.optimizer_step()
        direct.optimizer_step()
    assert all(torch.equal(a, b) for a, b in zip(built.q_net.parameters(), direct.q_net.parameters()))


@pytest.mark.parametrize("name", ["dqn", "qrdqn"])
def test_sb3_target_network_syncs_every_target_update_interval_selections(name):
    agent = make(name, epsilon=1.0, target_update_interval=3 * B)
    gen = torch.Generator().manual_seed(9)

    def synced() -> bool:
        online = agent.q_net.state_dict()
        target = agent.q_net_target.state_dict()
        return all(torch.equal(online[k], target[k]) for k in online)

    assert synced()
    for _ in range(2):
        step(agent, gen)
    train_step(agent)  # 32 selections < 48: trained, not synced
    assert not synced()
    step(agent, gen)
    train_step(agent)  # 48 selections: synced after the step
    assert synced()
    step(agent, gen)
    train_step(agent)
    assert not synced()


@pytest.mark.parametrize("name", ["dqn", "qrdqn"])
def test_sb3_adapters_leave_global_rngs_alone(name):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    agent = make(name, epsilon=0.5)
    gen = torch.Generator().manual_seed(10)
    for _ in range(3):
        step(agent, gen)
        train_step(agent)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np.array_equal(after[1], np_state[1]) and after[2] == np_state[2]


@pytest.mark.parametrize("name", ["dqn", "qrdqn"])
def test_sb3_replay_is_one_add_per_step_and_keeps_b(name):
    agent = make(name, epsilon=1.0)
    gen = torch.Generator().manual_seed(12)
    step(agent, gen)
    assert agent.replay.n_envs == B and agent.replay.pos == 1
    obs = agent.replay.observations[0]  # [B, n_c, d]
    assert obs.shape == (B, N_C, D)
    with pytest.raises(ValueError, match="B=16"):
        agent.observe(
            torch.ones((3, N_C, D)),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3),
            None,
            torch.ones(3, dtype=torch.bool),
            torch.ones((3, N_C), dtype=torch.bool),
        )


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError) as err:
        make_stepwise_agent("no-such-agent", n_c=N_C, feature_dim=D, device="cpu", seed=0)
    for name in AGENTS:
        assert name in str(err.value)
    assert set(AGENTS) <= set(registered_stepwise_agents())


def test_register_stepwise_agent_refuses_duplicates_unless_overwrite():
    with pytest.raises(ValueError, match="already registered"):
        register_stepwise_agent("dqn", lambda **kw: None)
    register_stepwise_agent("test-custom", STEPWISE_AGENTS.resolve("mmir-dqn"))
    try:
        register_stepwise_agent("test-custom", STEPWISE_AGENTS.resolve("dqn"), overwrite=True)
        assert not make(name="test-custom").joint_loss
    finally:
        STEPWISE_AGENTS.pop("test-custom", None)
