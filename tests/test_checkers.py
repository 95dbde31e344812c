"""Gymnasium's and Stable-Baselines3's environment checkers on the registered synthetic env."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mmir_env  # noqa: F401  (registers the ids)

# SB3 recommends a custom features extractor for any observation that is neither 1-D nor an
# image; the candidate-set matrix [n_c, d] is the paper's state, and agents.CandidateSetExtractor
# is that extractor. This is the one warning we accept, by its exact text.
ACCEPTED = ("has an unconventional shape (neither an image, nor a 1D vector)",)


@pytest.fixture(scope="module")
def registered_env():
    env = gym.make("mmir/SyntheticRefinement-v0")
    yield env
    env.close()


def _unexpected(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if not any(a in str(w.message) for a in ACCEPTED)]


def test_make_needs_no_arguments(registered_env):
    assert registered_env.observation_space.shape == (5, 1024)
    assert registered_env.action_space.n == 5


def test_gymnasium_check_env_passes_without_warnings(registered_env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(registered_env.unwrapped)
    assert _unexpected(caught) == []


def test_sb3_check_env_passes_without_unexpected_warnings(registered_env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(registered_env, warn=True)
    assert _unexpected(caught) == []


def test_instance_refinement_id_takes_source_and_discriminator(small_source):
    env = gym.make("mmir/InstanceRefinement-v0", source=small_source, discriminator=small_source.discriminator, n_c=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
    assert _unexpected(caught) == []
