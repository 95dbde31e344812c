"""Every registered algorithm trains on a small synthetic env; plug-ins by name and entry point."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

from agents.registry import make_agent, register_agent, registered_agents
from agents.sb3_adapters import RefinementVecEnv
from mmir_env import InstanceRefinementEnv
from mmir_env.batched import BatchedRefinementEnv

BUILT_IN = ["a2c", "dqn", "maskable-ppo", "mmir-dqn", "oracle", "ppo", "qrdqn", "random"]


def test_built_ins_are_registered():
    assert set(BUILT_IN) <= set(registered_agents())


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_algorithm_trains_and_predicts_valid_actions(small_source, name):
    env = InstanceRefinementEnv(small_source, n_c=5, E=2, logit_noise=1.0)
    kwargs = {"seed": 0}
    if name in ("dqn", "qrdqn"):
        kwargs["learning_starts"] = 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3's advice about non-1-D observations
        agent = make_agent(name, env, **kwargs)
        agent.learn(2_000)
    obs, info = env.reset(seed=1)
    for _ in range(2):
        action, _ = agent.predict(obs, deterministic=True)
        assert np.asarray(action).shape in ((), (1,))
        a = int(np.asarray(action).reshape(()))
        assert 0 <= a < 5
        obs, _, terminated, _, info = env.step(a)
        if terminated:
            break


def test_unknown_agent_lists_registered_ones(small_env):
    with pytest.raises(KeyError, match="unknown agent 'sac'; registered agents: a2c, dqn, maskable-ppo, mmir-dqn"):
        make_agent("sac", small_env)


def test_register_user_agent_and_refuse_silent_overwrite(small_env):
    from agents.heuristics import RandomAgent

    register_agent("my-random", lambda env, **kw: RandomAgent(env, seed=kw.get("seed")))
    assert "my-random" in registered_agents()
    assert isinstance(make_agent("my-random", small_env, seed=1), RandomAgent)
    with pytest.raises(ValueError, match="already registered"):
        register_agent("my-random", lambda env, **kw: None)


def test_entry_point_plugins_are_discovered(monkeypatch, small_env):
    from importlib import metadata

    import agents.registry as registry

    ep = metadata.EntryPoint(name="ep-random", value="agents.heuristics:RandomAgent", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "ep-random" in registry.registered_agents()
    agent = registry.make_agent("ep-random", small_env)
    assert type(agent).__name__ == "RandomAgent"


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo", "dqn"])
def test_sb3_algorithms_train_on_the_batched_env_through_the_vecenv_adapter(small_source, name):
    batched = BatchedRefinementEnv(small_source, num_envs=64, logit_noise=1.0)
    kwargs = {"seed": 0}
    if name == "dqn":
        kwargs.update(learning_starts=256, train_freq=1)
    if name != "dqn":
        kwargs.update(n_steps=16, batch_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = make_agent(name, batched, **kwargs)
        assert isinstance(agent.get_env(), VecEnv)
        agent.learn(4_096)
    assert agent.num_timesteps >= 4_096


def test_vecenv_adapter_contract(small_source):
    vec = RefinementVecEnv(BatchedRefinementEnv(small_source, num_envs=8, E=2))
    vec.seed(3)
    obs = vec.reset()
    assert obs.shape == (8, 5, 32) and isinstance(obs, np.ndarray)
    obs, rewards, dones, infos = vec.step(np.zeros(8, dtype=np.int64))
    assert not dones.any() and len(infos) == 8 and all("terminal_observation" not in i for i in infos)
    masks = np.stack(vec.env_method("action_masks"))
    assert masks.shape == (8, 5) and not masks[:, 0].any()
    obs, rewards, dones, infos = vec.step(np.ones(8, dtype=np.int64))
    assert dones.all()
    assert all(np.all(i["terminal_observation"][[0, 1]] == 0) for i in infos)
    assert np.stack(vec.env_method("action_masks")).all()  # fresh sets after the autoreset
    with pytest.raises(ValueError, match="SAME_STEP"):
        RefinementVecEnv(BatchedRefinementEnv(small_source, num_envs=8, autoreset_mode="NextStep"))
