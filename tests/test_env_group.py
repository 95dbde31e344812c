"""EnvGroup: several batched refinement envs stepped as one give each env its own transition, bit for bit."""

from __future__ import annotations

import pytest
import torch

from features.domain_discriminator import seeded_discriminator
from mmir_env.batched import BatchedRefinementEnv
from mmir_env.env_group import EnvGroup, group_blocker

D, S, N_C = 16, 3, 5


def make_env(seed: int, domain: str, tau: float, reward: str = "threshold", **kwargs) -> BatchedRefinementEnv:
    options = {"num_envs": S, "n_c": N_C, "E": 2, "autoreset_mode": "Disabled", "score_all_rows": True} | kwargs
    return BatchedRefinementEnv(
        None, discriminator=seeded_discriminator(D, seed), domain=domain, tau=tau, reward=reward, copy=False,
        feature_dim=D, **options,
    )  # fmt: skip


def four_envs(reward: str) -> list[BatchedRefinementEnv]:
    """Two discriminators (modalities) x two domains, with different thresholds: a co-training step's refiners."""
    return [make_env(m, d, tau, reward) for m in (0, 1) for d, tau in (("source", 0.3), ("target", 0.6))]


@pytest.mark.parametrize("reward", ["threshold", "margin", "rank"])
@pytest.mark.parametrize("truth", [True, False])
def test_group_step_is_each_envs_own_step_bit_for_bit(reward: str, truth: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(4, S, N_C, D, generator=gen)
    negative = torch.rand(4, S, N_C, generator=gen) < 0.3
    alone, grouped = four_envs(reward), four_envs(reward)
    group = EnvGroup(grouped)
    for i in range(4):
        alone[i].load_candidate_sets(feats[i], negative[i] if truth else None)
        grouped[i].load_candidate_sets(feats[i], negative[i] if truth else None)
    first = torch.tensor([[0, 4, 2], [1, 1, 1], [3, 0, 4], [2, 2, 0]])
    second = torch.tensor([[1, 0, 3], [2, 0, 3], [1, 1, 1], [0, 1, 1]])  # selectable rows only: the step's contract
    for actions in (first, second):
        step = group.step(actions)
        for i, env in enumerate(alone):
            obs, rewards, terminated, _, info = env.step_unchecked(actions[i])
            assert torch.equal(step.obs[i], obs) and torch.equal(grouped[i].mask, env.mask)
            assert torch.equal(step.rewards[i], rewards) and step.rewards.dtype == rewards.dtype
            assert torch.equal(step.terminated[i], terminated)
            assert torch.equal(step.relevance_rows[i], info["relevance_rows"])
            if truth:
                assert step.is_negative is not None and torch.equal(step.is_negative[i], info["is_negative"])
            else:
                assert step.is_negative is None
    assert step.terminated.all() and all(env.needs_reset.all() for env in grouped)  # E = 2 selections made


def test_envs_of_a_group_keep_working_alone_on_the_shared_state() -> None:
    envs = four_envs("threshold")
    for env in envs:
        env.load_candidate_sets(torch.ones(S, N_C, D))
    group = EnvGroup(envs)  # the loaded sets are copied into the group's stacks
    assert torch.equal(group.obs, torch.ones(4, S, N_C, D)) and group.mask.all()
    envs[2].load_candidate_sets(torch.full((S, N_C, D), 2.0))
    assert torch.equal(group.obs[2], torch.full((S, N_C, D), 2.0))
    envs[2].step(torch.tensor([4, 4, 4]))
    assert not group.mask[2, :, 4].any() and group.mask[[0, 1, 3]].all()
    assert torch.equal(group.steps[2], torch.ones(S, dtype=torch.int64))


def test_the_same_envs_reuse_their_group_and_other_envs_get_a_new_one() -> None:
    envs = four_envs("threshold")
    group = EnvGroup.of(envs)
    assert group is not None and EnvGroup.of(envs) is group and envs[0].group is group
    pair = EnvGroup.of(envs[:2])
    assert pair is not None and pair is not group and envs[0].group is pair


@pytest.mark.parametrize(
    ("envs", "reason"),
    [
        (lambda: [make_env(0, "source", 0.5)], "two or more"),
        (lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, num_envs=S + 1)], "differ in num_envs"),
        (lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, E=1)], "differ in num_envs"),
        (lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, score_all_rows=False)], "score_all_rows"),
        (lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, logit_noise=0.1)], "logit noise"),
        (lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, "rank")], "rewards differ"),
        (
            lambda: [make_env(0, "source", 0.5), make_env(1, "target", 0.5, reward_signals={"entropy": 1.0})],
            "relevance signals",
        ),
    ],
)
def test_envs_that_cannot_step_together_are_named_with_the_reason(envs, reason: str) -> None:
    made = envs()
    assert reason in (group_blocker(made) or "")
    assert EnvGroup.of(made) is None
    with pytest.raises(ValueError, match="cannot step as one group"):
        EnvGroup(made)


@pytest.mark.parametrize("truth", [True, False])
def test_group_load_is_each_envs_own_load(truth: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    halves = torch.randn(4, S * N_C, D, generator=gen)
    negative = torch.rand(4, S * N_C, generator=gen) < 0.3
    alone, grouped = four_envs("threshold"), four_envs("threshold")
    group = EnvGroup(grouped)
    obs = group.load(halves, negative if truth else None)
    for i, env in enumerate(alone):
        expected = env.load_candidate_sets(halves[i].reshape(S, N_C, D), negative[i].reshape(S, N_C) if truth else None)
        assert torch.equal(obs[i], expected) and torch.equal(grouped[i].mask, env.mask)
        assert torch.equal(grouped[i].needs_reset, env.needs_reset)
        assert torch.equal(grouped[i].candidate_index, env.candidate_index)
        if truth:
            assert torch.equal(grouped[i].candidate_is_negative, env.candidate_is_negative)
        else:
            assert grouped[i].candidate_is_negative is None
    with pytest.raises(ValueError, match="4 floating-point halves of 15 rows x 16"):
        group.load(halves[:3])
