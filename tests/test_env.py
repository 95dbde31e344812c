"""The environment contract (docs/architecture.md, "The environment contract")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmir_env import InstanceRefinementEnv, discriminator_relevance
from mmir_env.domains import SOURCE, TARGET


def test_reset_observation_and_info(small_env):
    obs, info = small_env.reset(seed=3)
    assert obs.shape == (5, 32) and obs.dtype == np.float32
    assert small_env.observation_space.contains(obs)
    assert info["action_mask"].tolist() == [True] * 5
    idx = info["candidate_index"]
    assert len(set(idx.tolist())) == 5  # distinct pool rows
    assert np.array_equal(obs, small_env.source.features("source")[idx].numpy())


@pytest.mark.parametrize("E", [1, 2, 4])
def test_selected_rows_zeroed_masks_right_episode_length(small_source, E):
    env = InstanceRefinementEnv(small_source, n_c=5, E=E)
    obs, info = env.reset(seed=0)
    original = obs.copy()
    removed: list[int] = []
    for t in range(E):
        action = int(np.flatnonzero(info["action_mask"])[0 if t % 2 else -1])
        obs, reward, terminated, truncated, info = env.step(action)
        removed.append(action)
        assert obs.shape == (5, 32)
        assert reward in (1.0, -1.0)
        assert not info["invalid_action"]
        assert np.all(obs[removed] == 0)
        kept = [i for i in range(5) if i not in removed]
        assert np.array_equal(obs[kept], original[kept])
        assert info["action_mask"].tolist() == [i not in removed for i in range(5)]
        assert np.array_equal(env.action_masks(), info["action_mask"])
        assert terminated is (t == E - 1) and truncated is False
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_invalid_reselection_penalised_state_unchanged(small_source):
    env = InstanceRefinementEnv(small_source, n_c=5, E=3)
    env.reset(seed=1)
    obs1, r1, *_, info1 = env.step(2)
    assert not info1["invalid_action"]
    obs2, r2, term, trunc, info2 = env.step(2)
    assert info2["invalid_action"] is True and r2 == -1.0
    assert np.array_equal(obs1, obs2)
    assert np.array_equal(info2["action_mask"], info1["action_mask"])
    # the invalid attempt used a step: one more step ends the episode
    *_, term, _, _ = env.step(0)
    assert term is True


def test_returns_fresh_arrays(small_env):
    obs, info = small_env.reset(seed=0)
    obs[:] = 7.0
    info["action_mask"][:] = False
    obs2, _, _, _, info2 = small_env.step(0)
    assert not np.any(obs2 == 7.0)
    assert info2["action_mask"].sum() == 4


def test_same_seed_same_episode_different_seed_differs(small_source):
    def rollout(seed: int) -> tuple[np.ndarray, float, dict]:
        env = InstanceRefinementEnv(small_source, n_c=5, E=2)
        obs, _ = env.reset(seed=seed)
        o, r, *_, info = env.step(1)
        return obs, r, info

    a, b, c = rollout(11), rollout(11), rollout(12)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2]["relevance"] == b[2]["relevance"]
    assert not np.array_equal(a[0], c[0])


def test_reward_matches_eq3_eq4_for_the_chosen_row(small_source):
    for domain in (SOURCE, TARGET):
        env = InstanceRefinementEnv(small_source, domain=domain, n_c=5, E=1, tau=0.5)
        for seed in range(10):
            obs, _ = env.reset(seed=seed)
            rel = discriminator_relevance(env.discriminator, torch.from_numpy(obs), domain)
            a = seed % 5
            _, reward, _, _, info = env.step(a)
            assert info["relevance"] == pytest.approx(float(rel[a]), abs=1e-6)
            assert reward == (1.0 if rel[a] < 0.5 else -1.0)


def test_is_negative_reported_from_ground_truth(small_source):
    env = InstanceRefinementEnv(small_source, n_c=5, E=1)
    truth = small_source.is_negative("source").numpy()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        _, _, _, _, step_info = env.step(seed % 5)
        assert step_info["is_negative"] == bool(truth[info["candidate_index"][seed % 5]])


def test_live_discriminator_changes_next_reward(small_source):
    disc = torch.nn.Sequential(torch.nn.Linear(32, 1))
    env = InstanceRefinementEnv(small_source, discriminator=disc, n_c=5, E=2)
    with torch.no_grad():
        disc[0].weight.zero_()
        disc[0].bias.fill_(-5.0)  # P(target) ~ 0.007: every source row has low relevance -> +1
    env.reset(seed=0)
    _, r_before, *_ = env.step(0)
    env.reset(seed=0)
    with torch.no_grad():
        disc[0].bias.fill_(5.0)  # the same row now looks like target -> -1
    _, r_after, *_ = env.step(0)
    assert (r_before, r_after) == (1.0, -1.0)


def test_rank_reward_variant(small_source):
    env = InstanceRefinementEnv(small_source, n_c=5, E=1, reward="rank")
    obs, _ = env.reset(seed=4)
    rel = discriminator_relevance(env.discriminator, torch.from_numpy(obs), SOURCE).numpy()
    _, r_best, *_ = env.step(int(rel.argmin()))
    env.reset(seed=4)
    _, r_worst, *_ = env.step(int(rel.argmax()))
    assert (r_best, r_worst) == (1.0, -1.0)


def test_handed_in_candidate_set(small_source):
    env = InstanceRefinementEnv(small_source, n_c=5, E=1)
    feats = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    obs, info = env.reset(options={"features": feats, "is_negative": [1, 0, 0, 0, 0]})
    assert np.array_equal(obs, feats)
    _, _, _, _, info = env.step(0)
    assert info["is_negative"] is True


def test_discriminator_mode_restored_after_scoring(small_source):
    disc = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.Dropout(0.9), torch.nn.Linear(8, 1))
    env = InstanceRefinementEnv(small_source, discriminator=disc, n_c=5, E=1)
    disc.train()
    env.reset(seed=0)
    _, _, _, _, a = env.step(1)
    env.reset(seed=0)
    _, _, _, _, b = env.step(1)
    assert disc.training  # put back as it was
    assert a["relevance"] == b["relevance"]  # scored in eval mode: no dropout noise
