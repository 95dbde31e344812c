"""Random and oracle agents, and the precision gap on the default synthetic benchmark."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import OracleAgent, RandomAgent
from experiments.study import evaluate_selection
from mmir_env import discriminator_relevance


def test_random_agent_only_picks_selectable_rows():
    agent = RandomAgent(seed=0)
    obs = np.ones((200, 5, 3), dtype=np.float32)
    obs[:, [0, 3]] = 0.0
    actions, state = agent.predict(obs)
    assert state is None and actions.shape == (200,)
    assert set(actions.tolist()) == {1, 2, 4}
    masks = np.zeros((200, 5), dtype=bool)
    masks[:, 4] = True
    assert set(agent.predict(obs, action_masks=masks)[0].tolist()) == {4}


def test_oracle_picks_argmin_relevance(small_env):
    agent = OracleAgent(small_env)
    obs, _ = small_env.reset(seed=2)
    rel = discriminator_relevance(small_env.discriminator, torch.from_numpy(obs), small_env.domain).numpy()
    action, _ = agent.predict(obs)
    assert action.shape == () and int(action) == int(rel.argmin())
    obs[int(action)] = 0.0  # removed row: never chosen again
    assert int(agent.predict(obs)[0]) != int(action)


def test_oracle_needs_a_discriminator():
    with pytest.raises(ValueError, match="OracleAgent needs"):
        OracleAgent(None)


def test_oracle_precision_far_above_random_on_defaults():
    env = gym.make("mmir/SyntheticRefinement-v0")
    negative_fraction = env.unwrapped.source.negative_fraction["source"]
    random_stats = evaluate_selection(RandomAgent(seed=0), env, episodes=1500, seed=0)
    oracle_stats = evaluate_selection(OracleAgent(env), env, episodes=1500, seed=0)
    # random's precision is the fraction of negatives (binomial std ~1% at 1500 selections)
    assert abs(random_stats.precision - negative_fraction) < 0.04
    assert oracle_stats.precision > 2.5 * random_stats.precision
    assert oracle_stats.mean_episode_reward > random_stats.mean_episode_reward
    assert oracle_stats.invalid_rate == 0.0 and random_stats.invalid_rate == 0.0
