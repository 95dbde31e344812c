"""Every registered algorithm trains on a small synthetic env; plug-ins by name and entry point; the Registry table."""

from __future__ import annotations

import os.path
import pickle
import warnings
from importlib import metadata

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

from agents.registry import make_agent, register_agent, registered_agents
from agents.sb3_adapters import RefinementVecEnv
from features.registry import Registry, UnknownNameError
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
    with pytest.raises(KeyError, match="agent 'sac' is not known; choose one of a2c, dqn, maskable-ppo, mmir-dqn"):
        make_agent("sac", small_env)


def test_register_user_agent_and_refuse_silent_overwrite(small_env):
    from agents.heuristics import RandomAgent
    from agents.registry import AGENTS

    register_agent("my-random", lambda env, **kw: RandomAgent(env, seed=kw.get("seed")))
    try:
        assert "my-random" in registered_agents()
        assert isinstance(make_agent("my-random", small_env, seed=1), RandomAgent)
        with pytest.raises(ValueError, match="already registered"):
            register_agent("my-random", lambda env, **kw: None)
    finally:
        AGENTS.pop("my-random")


def test_entry_point_plugins_are_discovered(monkeypatch, small_env):
    import agents.registry as registry
    import features.registry

    ep = metadata.EntryPoint(name="ep-random", value="agents.heuristics:RandomAgent", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        features.registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else []
    )
    fresh = Registry(
        "agent", "agent", {"random": "agents.heuristics:RandomAgent"}, entry_point_group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "AGENTS", fresh)
    assert registry.registered_agents() == ["ep-random", "random"]
    agent = registry.make_agent("ep-random", small_env)
    assert type(agent).__name__ == "RandomAgent"


# -- the Registry table ---------------------------------------------------------------------------
def _double(x: int) -> int:
    return 2 * x


def test_registry_registers_refuses_taken_names_and_replaces_on_purpose():
    table: Registry = Registry("widget", "model.widget", {"b": _double})
    table.register("a", len)
    assert list(table) == table.names() == ["a", "b"] and len(table) == 2
    assert "a" in table and "c" not in table and 3 not in table
    with pytest.raises(ValueError, match="a widget named 'a' is already registered"):
        table.register("a", _double)
    table.register("a", _double, overwrite=True)
    assert table.resolve("a") is _double
    assert table.pop("a") is _double and "a" not in table and table.pop("a") is None


@pytest.mark.parametrize(
    "name, entry, error, message",
    [
        ("", len, ValueError, "widget name must be a non-empty string"),
        (3, len, ValueError, "widget name must be a non-empty string"),
        ("x", "no_colon", ValueError, "'module:attribute'"),
        ("x", 42, TypeError, "must be callable"),
    ],
)
def test_registry_rejects_bad_names_and_entries(name, entry, error, message):
    with pytest.raises(error, match=message):
        Registry("widget", "model.widget").register(name, entry)


def test_registry_imports_a_lazy_entry_once_on_first_use():
    table: Registry = Registry("widget", "model.widget", {"join": "os.path:join", "bad": "os.path:no_such_thing"})
    assert table.resolve("join") is os.path.join
    assert "join" in repr(table)
    with pytest.raises(ImportError, match="widget 'bad' is 'os.path:no_such_thing', which does not import"):
        table.resolve("bad")


def test_registry_unknown_name_names_the_key_and_the_choices():
    table: Registry = Registry("widget", "model.widget", {"b": _double, "a": len})
    with pytest.raises(UnknownNameError) as err:
        table.resolve("c")
    assert str(err.value) == "model.widget 'c' is not known; choose one of a, b"
    assert isinstance(err.value, KeyError) and err.value.choices == ("a", "b") and err.value.key == "model.widget"
    with pytest.raises(KeyError, match="stage1.widget 'c' is not known"):
        table.resolve("c", key="stage1.widget")
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)


def test_registry_entry_points_join_on_first_lookup_and_code_wins(monkeypatch):
    import features.registry

    eps = [
        metadata.EntryPoint(name="a", value="os.path:basename", group="g"),
        metadata.EntryPoint(name="j", value="os.path:join", group="g"),
    ]
    calls = []
    monkeypatch.setattr(features.registry, "entry_points", lambda group: calls.append(group) or eps)
    table: Registry = Registry("widget", "widget", {"a": len}, entry_point_group="g")
    assert calls == []  # nothing is loaded before a lookup
    assert table.names() == ["a", "j"] and calls == ["g"]
    assert table.resolve("a") is len and table.resolve("j") is os.path.join
    assert len(table) == 2 and calls == ["g"]  # loaded once


def test_every_built_in_entry_imports():
    """A moved module breaks its lazy "module:attribute" entry only on first use: resolve them all here."""
    from agents.registry import AGENTS
    from agents.stepwise import STEPWISE_AGENTS
    from experiments import registries

    tables = [registries.DATASETS, registries.MODELS, registries.OBJECTIVES, registries.REFINERS]
    for table in [*tables, registries.STRATEGIES, registries.EVALUATION_HOOKS, AGENTS, STEPWISE_AGENTS]:
        for name in table:
            assert callable(table.resolve(name)), (table.what, name)


def test_experiment_tables_are_registries_with_their_config_keys():
    from experiments import registries

    assert registries.REFINERS.key == "refinement.policy" and "agent" in registries.REFINERS
    with pytest.raises(KeyError, match="refinement.policy 'nope' is not known; choose one of agent, ground-truth"):
        registries.REFINERS.resolve("nope")
    with pytest.raises(ValueError, match="a refiner named 'none' is already registered"):
        registries.REFINERS.register("none", len)
    with pytest.raises(ValueError, match="already registered"):
        registries.register_datasets("epic", len)


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
