"""RefinementDQN: masking, TD targets, save/load, determinism, step-wise API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.dqn import RefinementDQN
from agents.exploration import ExponentialEpsilon, LinearEpsilon, make_schedule
from agents.qnets import CandidateSetQNet, FlatQNet
from mmir_env import InstanceRefinementEnv
from mmir_env.batched import BatchedRefinementEnv


@pytest.fixture
def batched_env(small_source):
    return BatchedRefinementEnv(small_source, num_envs=64, logit_noise=1.0)


def test_candidate_set_qnet_is_permutation_equivariant():
    torch.manual_seed(0)
    net = CandidateSetQNet(8, 5, hidden_dim=16)
    obs = torch.randn(3, 5, 8)
    obs[1, 2] = 0.0  # a removed row
    perm = torch.tensor([3, 0, 4, 1, 2])
    q = net(obs)
    assert torch.allclose(net(obs[:, perm]), q[:, perm], atol=1e-6)


def test_flat_qnet_is_not_equivariant_and_checks_n_c():
    torch.manual_seed(0)
    net = FlatQNet(8, 5, hidden_dims=(32,))
    obs = torch.randn(2, 5, 8)
    perm = torch.tensor([1, 0, 2, 3, 4])
    assert not torch.allclose(net(obs[:, perm]), net(obs)[:, perm])
    with pytest.raises(ValueError, match="built for n_c=5"):
        net(torch.randn(2, 4, 8))


@settings(max_examples=60, deadline=None)
@given(
    masks=st.lists(st.lists(st.booleans(), min_size=5, max_size=5).filter(any), min_size=1, max_size=16),
    epsilon=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_masked_agent_never_chooses_a_removed_row(masks, epsilon, seed):
    agent = RefinementDQN(
        n_c=5, feature_dim=8, epsilon=epsilon, seed=seed, device="cpu", q_net_kwargs={"hidden_dim": 8}
    )
    mask = torch.tensor(masks)
    obs = torch.randn(mask.shape[0], 5, 8) * mask.unsqueeze(-1)
    for deterministic in (False, True):
        actions = agent.act(obs, mask, deterministic=deterministic)
        assert bool(mask[torch.arange(mask.shape[0]), actions].all())
    pred, _ = agent.predict(obs.numpy(), action_masks=mask.numpy())
    assert bool(mask[torch.arange(mask.shape[0]), torch.from_numpy(pred)].all())


def test_td_target_skips_removed_rows_and_terminal_states():
    agent = RefinementDQN(
        n_c=3, feature_dim=2, gamma=0.9, batch_size=4, learning_starts=1, device="cpu", seed=0, buffer_size=4
    )
    with torch.no_grad():  # a target net whose Q is the first feature of each row
        for p in agent.q_net_target.parameters():
            p.zero_()

    class FirstFeature(torch.nn.Module):
        def forward(self, obs, mask=None):
            return obs[..., 0]

    agent.q_net_target = FirstFeature()
    obs = torch.tensor([[[5.0, 1.0], [9.0, 1.0], [1.0, 1.0]]]).repeat(4, 1, 1)
    next_mask = torch.tensor([[True, False, True]]).repeat(4, 1)  # row 1 (Q=9) removed
    dones = torch.tensor([False, False, True, False])
    agent.observe(obs, torch.ones(4, dtype=torch.long), torch.ones(4), None, dones, next_mask)
    batch = agent.replay.sample(64, torch.Generator().manual_seed(0))
    q_next = FirstFeature()(batch.next_obs).masked_fill(~batch.next_mask, float("-inf")).amax(1)
    assert torch.all(q_next == 5.0)  # the max skips the removed row with 9
    # through td_loss: with the online Q at 0, the loss is the mean of the squared targets
    for p in agent.q_net.parameters():
        torch.nn.init.zeros_(p)
    agent.batch_size = 256
    loss = agent.td_loss()
    # targets: 1 + 0.9 * 5 = 5.5 (3 of 4 transitions), 1.0 (the terminal one); sampled uniformly
    assert 1.0 < loss.item() < 5.5**2


def test_save_load_round_trip_gives_identical_greedy_actions(tmp_path, batched_env, small_source):
    agent = RefinementDQN(batched_env, seed=0, batch_size=64, q_net_kwargs={"hidden_dim": 32})
    agent.learn(4_000)
    path = tmp_path / "agent.pt"
    agent.save(path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = RefinementDQN.load(path, env=batched_env)
    obs = small_source.features("source")[:100].reshape(20, 5, 32)
    assert torch.equal(agent.act(obs, deterministic=True), loaded.act(obs, deterministic=True))
    assert loaded.selections == agent.selections and loaded.num_timesteps == agent.num_timesteps
    assert loaded.exploration_rate == agent.exploration_rate
    for a, b in zip(agent.q_net.state_dict().values(), loaded.q_net.state_dict().values()):
        assert torch.equal(a, b)


def test_load_for_another_shape_says_so(tmp_path, small_source):
    agent = RefinementDQN(n_c=5, feature_dim=32, device="cpu")
    agent.save(tmp_path / "a.pt")
    env4 = InstanceRefinementEnv(small_source, n_c=4)
    with pytest.raises(ValueError, match="saved for candidate sets of n_c=5, d=32; the env has n_c=4, d=32"):
        RefinementDQN.load(tmp_path / "a.pt", env=env4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a RefinementDQN file"):
        RefinementDQN.load(tmp_path / "junk.pt")


def test_learn_on_non_candidate_set_env_says_what_it_expected():
    import gymnasium as gym

    with pytest.raises(ValueError, match=r"expected a candidate-set observation space Box\(shape=\(n_c, d\)\)"):
        RefinementDQN(gym.make("CartPole-v1"))


def test_learning_is_deterministic_given_seed(small_source):
    def run() -> torch.Tensor:
        env = BatchedRefinementEnv(small_source, num_envs=32, logit_noise=1.0)
        agent = RefinementDQN(env, seed=3, batch_size=32, q_net_kwargs={"hidden_dim": 16})
        agent.learn(2_000)
        return torch.cat([p.flatten() for p in agent.q_net.parameters()])

    assert torch.equal(run(), run())


def test_learns_on_the_single_env_too(small_source):
    env = InstanceRefinementEnv(small_source, logit_noise=1.0)
    agent = RefinementDQN(env, seed=0, batch_size=32, q_net_kwargs={"hidden_dim": 16})
    agent.learn(600)
    assert agent.num_timesteps == 600 and agent.updates > 0 and len(agent.replay) == 600
    action, _ = agent.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == () and 0 <= int(action) < 5


def test_step_wise_api_for_cotraining():
    agent = RefinementDQN(n_c=5, feature_dim=8, batch_size=8, device="cpu", seed=0, target_update_interval=16)
    assert agent.update().item() == 0.0  # nothing stored yet
    obs = torch.randn(8, 5, 8)
    mask = torch.ones(8, 5, dtype=torch.bool)
    actions = agent.act(obs, mask)
    next_mask = mask.clone()
    next_mask[torch.arange(8), actions] = False
    agent.observe(obs, actions, torch.ones(8), None, torch.ones(8, dtype=torch.bool), next_mask)
    loss = agent.update(optimize=False)
    assert loss.requires_grad  # for the outer loop's eq. 9
    before = [p.detach().clone() for p in agent.q_net.parameters()]
    loss.backward()
    agent.optimizer_step()
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.q_net.parameters()))
    assert agent.selections == 8


def test_epsilon_schedules():
    assert make_schedule(0.5)(10**6) == 0.5
    released = make_schedule("released")
    assert isinstance(released, ExponentialEpsilon)
    assert released(0) == pytest.approx(0.9) and released(24_000) == pytest.approx(0.01 + 0.89 / np.e)
    lin = LinearEpsilon(1.0, 0.1, 100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.55) and lin(1000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="epsilon must"):
        make_schedule(1.5)
