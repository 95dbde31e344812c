"""Environment and agents: exact candidate-set sampling, vector entry points, TensorBoard logs, agent defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmir_env import ArraySource, InstanceRefinementEnv
from mmir_env.sources.base import sample_distinct_rows


def _repeats(idx: np.ndarray) -> np.ndarray:
    ordered = np.sort(idx, axis=1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)


# -- candidate-set sampling: exact and bounded for any n_c <= pool size ---------------------------
@st.composite
def _draws(draw: st.DrawFn) -> tuple[int, int, int, int]:
    pool = draw(st.integers(1, 300))
    n_c = draw(st.integers(0, pool))
    return pool, n_c, draw(st.integers(0, 40)), draw(st.integers(0, 2**32 - 1))


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(_draws())
def test_sample_distinct_rows_is_distinct_in_range_and_seeded(case: tuple[int, int, int, int]) -> None:
    pool, n_c, n_sets, seed = case
    idx = sample_distinct_rows(np.random.default_rng(seed), pool, n_sets, n_c)
    assert idx.shape == (n_sets, n_c) and np.issubdtype(idx.dtype, np.integer)
    if idx.size:
        assert idx.min() >= 0 and idx.max() < pool
        assert not _repeats(idx).any()
    again = sample_distinct_rows(np.random.default_rng(seed), pool, n_sets, n_c)
    assert np.array_equal(idx, again)


@pytest.mark.parametrize(("pool", "n_c"), [(4, 2), (5, 4), (4, 4), (9, 3)])
def test_sample_distinct_rows_is_uniform_over_ordered_sets(pool: int, n_c: int) -> None:
    """Every ordered set of distinct rows equally often (chi-square), on the exact and the rejection path."""
    from math import perm

    n_sets = 400 * perm(pool, n_c)
    idx = sample_distinct_rows(np.random.default_rng(11), pool, n_sets, n_c)
    codes = (idx * pool ** np.arange(n_c)).sum(axis=1)
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == perm(pool, n_c)
    expected = n_sets / counts.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = counts.size - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)  # ~5 sigma of the chi-square law


def test_sample_distinct_rows_keeps_todays_draws_when_repeats_are_rare() -> None:
    """Co-training's sizes (n_c = 5 of a pool of hundreds) draw exactly the rows the rejection loop drew."""

    def rejection(rng: np.random.Generator, pool: int, n_sets: int, n_c: int) -> np.ndarray:
        idx = rng.integers(0, pool, size=(n_sets, n_c))
        while (bad := np.flatnonzero(_repeats(idx))).size:
            idx[bad] = rng.integers(0, pool, size=(bad.size, n_c))
        return idx

    for pool, n_sets, n_c in [(200, 64, 5), (60, 1024, 5), (1000, 3, 8)]:
        a, b = np.random.default_rng(3), np.random.default_rng(3)
        for _ in range(3):  # the generator states must stay equal too
            assert np.array_equal(sample_distinct_rows(a, pool, n_sets, n_c), rejection(b, pool, n_sets, n_c))


def test_sample_distinct_rows_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_c=6 exceeds the pool size 5"):
        sample_distinct_rows(np.random.default_rng(0), 5, 1, 6)
    with pytest.raises(ValueError, match="n_sets"):
        sample_distinct_rows(np.random.default_rng(0), 5, -1, 2)


@pytest.mark.timeout(20)
def test_array_source_with_n_c_near_pool_size_resets_quickly() -> None:
    """45 distinct rows of 50: a redraw-until-distinct loop practically never returns here, so sampling must be exact."""
    rng = np.random.default_rng(0)
    source = ArraySource(
        {"source": rng.normal(size=(50, 8)), "target": rng.normal(size=(50, 8))}, discriminator=torch.nn.Linear(8, 1)
    )
    env = InstanceRefinementEnv(source, n_c=45)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert len(set(info["candidate_index"].tolist())) == 45
    full = InstanceRefinementEnv(source, n_c=50)
    _, info = full.reset(seed=0)
    assert sorted(info["candidate_index"].tolist()) == list(range(50))


@pytest.mark.timeout(20)
def test_batched_env_with_n_c_near_pool_size_resets_quickly() -> None:
    from mmir_env import BatchedRefinementEnv

    rng = np.random.default_rng(1)
    source = ArraySource({"source": rng.normal(size=(200, 8)), "target": rng.normal(size=(200, 8))})
    env = BatchedRefinementEnv(source, num_envs=256, n_c=150, discriminator=torch.nn.Linear(8, 1))
    env.reset(seed=0)
    assert not _repeats(env.candidate_index.numpy()).any()


# -- vector entry points --------------------------------------------------------------------------
def test_make_vec_vector_entry_point_builds_the_batched_synthetic_env() -> None:
    import gymnasium as gym

    from mmir_env import SYNTHETIC_REFINEMENT_ID, BatchedRefinementEnv

    envs = gym.make_vec(SYNTHETIC_REFINEMENT_ID, num_envs=6, vectorization_mode="vector_entry_point", pretrain_steps=5)
    assert isinstance(envs, BatchedRefinementEnv) and envs.num_envs == 6
    assert envs.spec is not None and envs.spec.id == SYNTHETIC_REFINEMENT_ID
    obs, info = envs.reset(seed=0)
    assert tuple(obs.shape) == (6, 5, envs.feature_dim)
    _, rewards, terminated, _, info = envs.step(torch.zeros(6, dtype=torch.long))
    assert tuple(rewards.shape) == (6,) and bool(terminated.all()) and not bool(info["invalid_action"].any())
    # the same data and discriminator as the single env of the same seed
    single = gym.make(SYNTHETIC_REFINEMENT_ID, pretrain_steps=5).unwrapped
    assert torch.equal(single.source.features("source"), envs.source.features("source"))
    for a, b in zip(single.discriminator.parameters(), envs.discriminator.parameters()):
        assert torch.equal(a, b)


def test_make_vec_vector_entry_point_builds_the_batched_instance_env() -> None:
    import gymnasium as gym

    from mmir_env import INSTANCE_REFINEMENT_ID, BatchedRefinementEnv

    rng = np.random.default_rng(2)
    source = ArraySource({"source": rng.normal(size=(40, 8)), "target": rng.normal(size=(30, 8))})
    envs = gym.make_vec(
        INSTANCE_REFINEMENT_ID,
        num_envs=4,
        vectorization_mode="vector_entry_point",
        source=source,
        discriminator=torch.nn.Linear(8, 1),
        domain="target",
        n_c=7,
    )
    assert isinstance(envs, BatchedRefinementEnv) and (envs.num_envs, envs.n_c, envs.domain) == (4, 7, 1)
    obs, _ = envs.reset(seed=1)
    assert tuple(obs.shape) == (4, 7, 8)
    # the other vectorisation modes still work
    sync = gym.make_vec(
        INSTANCE_REFINEMENT_ID,
        num_envs=2,
        vectorization_mode="sync",
        source=source,
        discriminator=torch.nn.Linear(8, 1),
    )
    assert sync.reset(seed=0)[0].shape == (2, 5, 8)


# -- RefinementDQN(tensorboard_log=...) -----------------------------------------------------------
def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("batched", [False, True])
def test_refinement_dqn_writes_tensorboard_runs_like_sb3(tmp_path, small_source, batched: bool) -> None:
    pytest.importorskip("tensorboard")
    from agents.dqn import RefinementDQN
    from mmir_env import BatchedRefinementEnv

    env = (
        BatchedRefinementEnv(small_source, num_envs=32, logit_noise=1.0)
        if batched
        else InstanceRefinementEnv(small_source, n_c=5, logit_noise=1.0)
    )
    steps = 640 if batched else 120
    agent = RefinementDQN(
        env, batch_size=32, seed=0, device="cpu", q_net_kwargs={"hidden_dim": 16}, tensorboard_log=tmp_path
    )
    agent.learn(steps, log_interval=30)
    agent.learn(steps, log_interval=30)  # a second run: a new numbered folder, as SB3 does
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RefinementDQN_1", "RefinementDQN_2"]
    agent.learn(steps, log_interval=30, reset_num_timesteps=False)  # continues the latest folder's curve
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RefinementDQN_1", "RefinementDQN_2"]
    assert max(s for s, _ in _scalars(tmp_path / "RefinementDQN_2")["time/fps"]) == 2 * steps

    scalars = _scalars(tmp_path / "RefinementDQN_1")
    for tag in (
        "train/loss",
        "rollout/exploration_rate",
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "rollout/selection_precision",
        "time/fps",
        "train/learning_rate",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    steps_logged = [s for s, _ in scalars["rollout/ep_rew_mean"]]
    assert steps_logged == sorted(steps_logged) and steps_logged[-1] == steps and len(steps_logged) >= 3
    assert all(v == 0.5 for _, v in scalars["rollout/exploration_rate"])
    assert all(v == 1.0 for _, v in scalars["rollout/ep_len_mean"])
    assert all(-1.0 <= v <= 1.0 for _, v in scalars["rollout/ep_rew_mean"])
    assert all(0.0 <= v <= 1.0 for _, v in scalars["rollout/selection_precision"])
    assert all(np.isfinite(v) and v >= 0 for _, v in scalars["train/loss"])
    assert "time/total_timesteps" not in scalars  # excluded from TensorBoard, as in SB3


def test_tensorboard_logging_changes_no_numbers(tmp_path, small_source) -> None:
    pytest.importorskip("tensorboard")
    from agents.dqn import RefinementDQN

    def trained(**kwargs):
        env = InstanceRefinementEnv(small_source, n_c=5, logit_noise=1.0)
        agent = RefinementDQN(env, batch_size=32, seed=3, device="cpu", q_net_kwargs={"hidden_dim": 16}, **kwargs)
        agent.learn(200, log_interval=10)
        return agent

    a, b = trained(), trained(tensorboard_log=tmp_path)
    for p, q in zip(a.q_net.parameters(), b.q_net.parameters()):
        assert torch.equal(p, q)
    assert (tmp_path / "RefinementDQN_1").is_dir()


def test_tensorboard_log_without_tensorboard_names_the_extra(monkeypatch, small_env) -> None:
    from stable_baselines3.common import logger as sb3_logger

    from agents.dqn import RefinementDQN

    monkeypatch.setattr(sb3_logger, "SummaryWriter", None)
    agent = RefinementDQN(small_env, seed=0, device="cpu", tensorboard_log="unused")
    with pytest.raises(ImportError, match=r'pip install "mmir\[tensorboard\]"'):
        agent.learn(10)


# -- SB3 algorithms on the batched env respect total_timesteps ------------------------------------
@pytest.mark.parametrize("name", ["ppo", "maskable-ppo", "a2c", "dqn", "qrdqn"])
def test_sb3_defaults_on_the_batched_env_respect_total_timesteps(small_source, name: str) -> None:
    import warnings

    from agents import make_agent
    from mmir_env import BatchedRefinementEnv

    env = BatchedRefinementEnv(small_source, num_envs=1024, logit_noise=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = make_agent(name, env, seed=0)
        agent.learn(2048)
    assert 2048 <= agent.num_timesteps <= 2048 + env.num_envs  # at most one vector step past the budget


def test_sb3_defaults_scale_with_the_number_of_envs(small_source) -> None:
    import warnings

    from agents import make_agent
    from mmir_env import BatchedRefinementEnv

    single = InstanceRefinementEnv(small_source, n_c=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert make_agent("ppo", single).n_steps == 256  # the single env keeps its tested defaults
        assert make_agent("dqn", single).train_freq.frequency == 4 and make_agent("dqn", single).gradient_steps == 1
        for n in (8, 1024):
            env = BatchedRefinementEnv(small_source, num_envs=n)
            assert make_agent("ppo", env).n_steps * n == max(256, n)
            assert make_agent("maskable-ppo", env).n_steps * n == max(256, n)
            assert make_agent("a2c", env).n_steps * n == max(32, n)
            dqn = make_agent("dqn", env)
            assert dqn.train_freq.frequency == 1 and dqn.gradient_steps == max(1, n // 64)
        assert (
            make_agent("ppo", BatchedRefinementEnv(small_source, num_envs=1024), n_steps=3).n_steps == 3
        )  # explicit wins


# -- RefinementDQN defaults that learn on the single env; co-training's values pinned -------------
def test_refinement_dqn_single_env_default_replays_each_transition_16_times(small_source) -> None:
    """The old default (one update of 256 per env step) replayed each transition ~256 times and fitted the reward noise."""
    from agents.dqn import RefinementDQN
    from mmir_env import BatchedRefinementEnv

    env = InstanceRefinementEnv(small_source, logit_noise=1.0)
    agent = RefinementDQN(env, seed=0, q_net_kwargs={"hidden_dim": 8}).learn(256 + 16 * 20)
    assert agent.updates == 21  # one update of 256 every 16 steps once 256 are stored
    small = RefinementDQN(env, seed=0, batch_size=32, q_net_kwargs={"hidden_dim": 8}).learn(32 + 2 * 50)
    assert small.updates == 51  # the same replay ratio: every 32 // 16 = 2 steps
    batched = BatchedRefinementEnv(small_source, num_envs=64, logit_noise=1.0)
    on_batched = RefinementDQN(batched, seed=0, q_net_kwargs={"hidden_dim": 8}).learn(64 * 10)
    assert on_batched.updates == 7  # every vector step, as before, once 256 are stored (after the 4th)
    explicit = RefinementDQN(env, seed=0, train_freq=1, batch_size=32, q_net_kwargs={"hidden_dim": 8}).learn(40)
    assert explicit.updates == 40 - 32 + 1


def test_cotraining_agents_keep_todays_refinement_dqn_values() -> None:
    """Co-training builds mmir-dqn with its own fixed values of every keyword it does not set.

    The offline defaults were changed so that agents learn on the single env (fewer replays per
    transition); co-training runs must not shift with them, so its values are pinned here.
    """
    from agents.stepwise import make_stepwise_agent

    agent = make_stepwise_agent("mmir-dqn", n_c=5, feature_dim=8, device="cpu", seed=0)
    hp = agent.hyperparameters
    assert (
        hp["train_freq"],
        hp["gradient_steps"],
        hp["max_grad_norm"],
        hp["weight_decay"],
        hp["replay_dtype"],
        hp["q_net_kwargs"],
    ) == (1, 1, None, 1e-7, "float32", {})
    assert (hp["batch_size"], hp["learning_starts"], hp["target_update_interval"], hp["learning_rate"]) == (
        64,
        64,
        48,
        1e-3,
    )
