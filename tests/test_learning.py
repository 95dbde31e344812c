"""Learning on mmir/SyntheticRefinement-v0 defaults (slow: CI runs it): agents against the oracle and random selection."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

import mmir_env  # noqa: F401
from agents import OracleAgent, RandomAgent, make_agent
from experiments.study import evaluate_selection
from mmir_env import BatchedRefinementEnv

pytestmark = pytest.mark.slow
EPISODES = 1500


@pytest.fixture(scope="module")
def envs():
    out = {}
    for domain in ("source", "target"):
        env = gym.make("mmir/SyntheticRefinement-v0", domain=domain)
        out[domain] = env
    return out


@pytest.fixture(scope="module")
def baselines(envs):
    return {
        d: (
            evaluate_selection(OracleAgent(env), env, EPISODES, seed=7),
            evaluate_selection(RandomAgent(seed=0), env, EPISODES, seed=7),
        )
        for d, env in envs.items()
    }


@pytest.mark.parametrize("domain", ["source", "target"])
def test_mmir_dqn_reaches_90_percent_of_oracle_precision(envs, baselines, domain):
    base = envs[domain].unwrapped
    batched = BatchedRefinementEnv(
        base.source, num_envs=1024, domain=domain, logit_noise=base.logit_noise, copy=False, include_final_obs=False
    )
    agent = make_agent("mmir-dqn", batched, seed=0).learn(200_000)
    stats = evaluate_selection(agent, envs[domain], EPISODES, seed=7)
    oracle, random = baselines[domain]
    assert stats.precision >= 0.9 * oracle.precision, (stats.precision, oracle.precision)
    assert stats.invalid_rate == 0.0


@pytest.mark.parametrize("name", ["dqn", "ppo", "maskable-ppo"])
def test_sb3_algorithms_beat_random_clearly(envs, baselines, name):
    env = envs["source"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = make_agent(name, env, seed=0).learn(10_000)
    stats = evaluate_selection(agent, env, EPISODES, seed=7)
    oracle, random = baselines["source"]
    # "clearly": at least 15 points above random's precision (random's binomial std is ~1 point)
    assert stats.precision >= random.precision + 0.15, (name, stats.precision, random.precision)
