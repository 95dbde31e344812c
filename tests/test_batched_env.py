"""BatchedRefinementEnv: equivalence with single envs, autoreset modes, handed-in candidate sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from mmir_env import InstanceRefinementEnv
from mmir_env.batched import BatchedRefinementEnv


@pytest.mark.parametrize("reward", ["threshold", "rank"])
@pytest.mark.parametrize("domain", ["source", "target"])
def test_rewards_identical_to_single_envs(small_source, reward, domain):
    n, E = 16, 3
    gen = np.random.default_rng(0)
    sets = small_source.features(domain)[torch.from_numpy(gen.choice(400, size=(n, 5)))]
    batched = BatchedRefinementEnv(
        small_source, num_envs=n, domain=domain, E=E, reward=reward, autoreset_mode="Disabled"
    )
    singles = [InstanceRefinementEnv(small_source, domain=domain, E=E, reward=reward) for _ in range(n)]
    obs_b, _ = batched.reset(options={"features": sets})
    for i, env in enumerate(singles):
        obs_s, _ = env.reset(options={"features": sets[i].numpy()})
        assert np.array_equal(obs_s, obs_b[i].numpy())
    for _t in range(E):
        actions = gen.integers(0, 5, size=n)  # random: includes invalid re-selections
        obs_b, r_b, term_b, trunc_b, info_b = batched.step(actions)
        for i, env in enumerate(singles):
            obs_s, r_s, term_s, trunc_s, info_s = env.step(int(actions[i]))
            assert r_s == r_b[i].item()
            assert np.array_equal(obs_s, obs_b[i].numpy())
            assert term_s == bool(term_b[i]) and trunc_s == bool(trunc_b[i])
            assert info_s["invalid_action"] == bool(info_b["invalid_action"][i])
            assert np.array_equal(info_s["action_mask"], info_b["action_mask"][i].numpy())
            if not info_s["invalid_action"]:
                assert info_s["relevance"] == pytest.approx(info_b["relevance"][i].item(), abs=1e-6)


def test_declares_autoreset_mode_per_instance(small_source):
    a = BatchedRefinementEnv(small_source, num_envs=4)
    b = BatchedRefinementEnv(small_source, num_envs=4, autoreset_mode=AutoresetMode.NEXT_STEP)
    assert a.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert b.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert isinstance(a.metadata["autoreset_mode"], AutoresetMode)


def test_same_step_autoreset_gives_final_obs_and_new_sets(small_source):
    env = BatchedRefinementEnv(small_source, num_envs=8, E=1)
    obs0, info0 = env.reset(seed=0)
    actions = torch.zeros(8, dtype=torch.long)
    obs1, rewards, term, trunc, info = env.step(actions)
    assert term.all() and not trunc.any()
    assert info["_final_obs"].all()
    assert torch.all(info["final_obs"][:, 0] == 0)  # the terminal state has row 0 removed
    assert torch.equal(info["final_obs"][:, 1:], obs0[:, 1:])
    assert info["action_mask"].all()  # the returned obs are fresh sets
    assert not torch.equal(obs1, obs0)
    assert info["final_info"]["action_mask"][:, 0].logical_not().all()


def test_next_step_autoreset_spends_a_step_on_reset(small_source):
    env = BatchedRefinementEnv(small_source, num_envs=4, E=1, autoreset_mode=AutoresetMode.NEXT_STEP)
    env.reset(seed=0)
    a = torch.zeros(4, dtype=torch.long)
    obs1, r1, term1, *_ = env.step(a)
    assert term1.all() and torch.all(obs1[:, 0] == 0)
    obs2, r2, term2, *_ = env.step(a)  # the reset step: no reward, not terminal
    assert not term2.any() and torch.all(r2 == 0) and env.mask.all()


def test_disabled_requires_explicit_reset_and_accepts_handed_in_features(small_source):
    env = BatchedRefinementEnv(
        None, discriminator=small_source.discriminator, num_envs=3, autoreset_mode="Disabled", feature_dim=32
    )
    feats = torch.randn(3, 5, 32)
    obs = env.load_candidate_sets(feats, is_negative=torch.zeros(3, 5, dtype=torch.bool))
    assert torch.equal(obs, feats)
    env.step(torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="not reset"):
        env.step(torch.tensor([1, 1, 1]))
    with pytest.raises(RuntimeError, match="no source"):
        env.reset()


@pytest.mark.parametrize("score_all_rows", [False, True])
def test_step_unchecked_is_the_transition_of_step(small_source, score_all_rows):
    def env() -> BatchedRefinementEnv:
        return BatchedRefinementEnv(
            None,
            discriminator=small_source.discriminator,
            num_envs=4,
            E=2,
            autoreset_mode="Disabled",
            feature_dim=32,
            score_all_rows=score_all_rows,
        )

    feats, negative = torch.randn(4, 5, 32), torch.rand(4, 5) < 0.3
    checked, unchecked = env(), env()
    checked.load_candidate_sets(feats, negative)
    unchecked.load_candidate_sets(feats, negative, finite_checked=True)
    for actions in (torch.tensor([0, 4, 2, 2]), torch.tensor([1, 4, 3, 0])):  # the second re-selects row 4: invalid
        a, b = checked.step(actions), unchecked.step_unchecked(actions)
        for x, y in zip(a[:4], b[:4]):
            assert torch.equal(x, y)
        assert a[4].keys() == b[4].keys()
        for key in a[4]:
            torch.testing.assert_close(a[4][key], b[4][key], rtol=0, atol=0, equal_nan=True)


def test_step_unchecked_refuses_envs_that_autoreset(small_source):
    env = BatchedRefinementEnv(small_source, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="autoreset_mode DISABLED"):
        env.step_unchecked(torch.tensor([0, 1]))


def test_seeded_reset_is_deterministic(small_source):
    a = BatchedRefinementEnv(small_source, num_envs=32)
    b = BatchedRefinementEnv(small_source, num_envs=32)
    assert torch.equal(a.reset(seed=5)[0], b.reset(seed=5)[0])
    assert not torch.equal(a.reset(seed=6)[0], b.reset(seed=5)[0])


def test_bad_arguments(small_source):
    with pytest.raises(ValueError, match="cannot autoreset"):
        BatchedRefinementEnv(None, discriminator=small_source.discriminator, feature_dim=32)
    env = BatchedRefinementEnv(small_source, num_envs=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"row indices in \[0, 5\)"):
        env.step(torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="4 integer row indices"):
        env.step(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"features must have shape \(num_envs, n_c, d\) = \(4, 5, 32\)"):
        env.load_candidate_sets(torch.zeros(4, 5, 16))
    bad = torch.zeros(4, 5, 32)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        env.load_candidate_sets(bad)


def test_score_all_rows_gives_the_same_rewards_and_every_rows_relevance(small_source):
    from mmir_env.scoring import discriminator_relevance

    plain = BatchedRefinementEnv(small_source, num_envs=16, domain="target", n_c=5, E=1)
    scored = BatchedRefinementEnv(small_source, num_envs=16, domain="target", n_c=5, E=1, score_all_rows=True)
    obs, _ = plain.reset(seed=3)
    obs2, _ = scored.reset(seed=3)
    assert torch.equal(obs, obs2)
    actions = torch.arange(16) % 5
    _, r_plain, _, _, info_plain = plain.step(actions)
    _, r_scored, _, _, info = scored.step(actions)
    assert torch.equal(r_plain, r_scored)
    assert "relevance_rows" not in info_plain
    expected = discriminator_relevance(small_source.discriminator, obs2, 1)
    assert torch.allclose(info["relevance_rows"], expected)
    assert torch.allclose(info["relevance_rows"][torch.arange(16), actions], info["relevance"])
