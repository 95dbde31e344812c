"""``make_agent(name, env)``: every algorithm that can train on the refinement env, by name.

Built in: ``mmir-dqn`` (:class:`~agents.dqn.RefinementDQN`), SB3's ``dqn``, ``ppo``, ``a2c``,
sb3-contrib's ``maskable-ppo`` and ``qrdqn``, and the heuristics ``random`` and ``oracle``.
User code adds algorithms with :func:`register_agent`; installed packages through the entry-point
group ``mmir.agents`` (each entry point loads a factory ``f(env, **kwargs) -> agent``).
An agent is anything with SB3's ``learn(total_timesteps, ...)`` and ``predict(obs, deterministic=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from features.registry import Registry

AgentFactory = Callable[..., Any]
ENTRY_POINT_GROUP = "mmir.agents"
#: name -> ``factory(env, **kwargs) -> agent``; installed entry points join on the first lookup.
AGENTS: Registry[AgentFactory] = Registry("agent", "agent", entry_point_group=ENTRY_POINT_GROUP)

# Replay sizes fit memory: SB3's default 1e6 transitions of 5x1024 float32 states would be ~41 GB.
SB3_REPLAY_SIZE = 20_000
# Transitions per rollout of the on-policy algorithms (n_steps on one env). On a vectorised env
# n_steps shrinks so that a rollout stays about this size: SB3 collects whole rollouts, so
# n_steps=256 on 1,024 sets would turn learn(2048) into 262,144 env steps.
ON_POLICY_ROLLOUT = {"ppo": 256, "maskable-ppo": 256, "a2c": 32}  # a2c: SB3's 5 updates too often on candidate sets


def register_agent(name: str, factory: AgentFactory, overwrite: bool = False) -> None:
    """Register ``factory(env, **kwargs) -> agent`` (or a ``"module:attribute"`` string naming it) under ``name``."""
    AGENTS.register(name, factory, overwrite=overwrite)


def registered_agents() -> list[str]:
    """Names accepted by :func:`make_agent`, sorted (installed entry points included)."""
    return AGENTS.names()


def make_agent(name: str, env: Any, **kwargs: Any) -> Any:
    """Build the agent registered as ``name`` for ``env``; an unknown name lists the registered ones."""
    return AGENTS.resolve(name)(env, **kwargs)


# -- built-in factories ---------------------------------------------------------------------------
def _sb3_env(env: Any) -> Any:
    """SB3 takes a gymnasium Env or an SB3 VecEnv; a BatchedRefinementEnv is wrapped as the latter."""
    from mmir_env.batched import BatchedRefinementEnv

    if isinstance(env, BatchedRefinementEnv):
        from agents.sb3_adapters import RefinementVecEnv

        return RefinementVecEnv(env)
    return env


def _num_envs(env: Any) -> int:
    """Sub-environments stepped at once: a batched env's or an SB3 VecEnv's ``num_envs``, 1 for a single env."""
    return int(getattr(getattr(env, "unwrapped", env), "num_envs", 1) or 1)


def sb3_policy_kwargs(kwargs: dict[str, Any], net_arch: Any) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` over candidate sets: :class:`~agents.sb3_adapters.CandidateSetExtractor` and
    ``net_arch``, updated with (and popping) ``kwargs["policy_kwargs"]``."""
    from agents.sb3_adapters import CandidateSetExtractor

    policy_kwargs = {"features_extractor_class": CandidateSetExtractor, "net_arch": net_arch}
    policy_kwargs.update(kwargs.pop("policy_kwargs", {}) or {})
    return policy_kwargs


def _sb3_factory(algorithm: str) -> AgentFactory:
    def factory(env: Any, **kwargs: Any) -> Any:
        if algorithm in ("dqn", "qrdqn"):
            from sb3_contrib import QRDQN
            from stable_baselines3 import DQN

            cls = DQN if algorithm == "dqn" else QRDQN
            defaults = dict(
                buffer_size=SB3_REPLAY_SIZE,
                learning_starts=500,
                gamma=0.9,
                train_freq=4,
                target_update_interval=1000,
                exploration_fraction=0.3,
                learning_rate=1e-3,
                batch_size=64,
            )
            num_envs = _num_envs(env)
            if num_envs > 1:
                # SB3 counts train_freq in vector steps: 4 would collect 4 x num_envs transitions per
                # rollout (learn(2048) on 1,024 sets ran 4,096 steps) and take one gradient step for
                # all of them. One vector step per rollout, and one gradient step of 64 per 64
                # transitions (each sampled once on average); the single env's 1 per 4 would cost
                # QRDQN's 200-quantile loss ~30 s per 1,024-set step on a CPU core.
                defaults.update(train_freq=1, gradient_steps=max(1, num_envs // 64))
            policy_kwargs = sb3_policy_kwargs(kwargs, [64])
        elif algorithm in ("ppo", "a2c", "maskable-ppo"):
            from sb3_contrib import MaskablePPO
            from stable_baselines3 import A2C, PPO

            cls = {"ppo": PPO, "a2c": A2C, "maskable-ppo": MaskablePPO}[algorithm]
            defaults = dict(
                gamma=0.9, learning_rate=1e-3, n_steps=max(1, ON_POLICY_ROLLOUT[algorithm] // _num_envs(env))
            )
            if algorithm != "a2c":
                defaults.update(batch_size=64, n_epochs=4)
            policy_kwargs = sb3_policy_kwargs(kwargs, dict(pi=[64], vf=[64]))
        else:  # pragma: no cover - closed set above
            raise KeyError(algorithm)
        params = {**defaults, "verbose": 0, **kwargs}
        return cls("MlpPolicy", _sb3_env(env), policy_kwargs=policy_kwargs, **params)

    factory.__name__ = f"make_{algorithm.replace('-', '_')}"
    return factory


def _mmir_dqn(env: Any, **kwargs: Any) -> Any:
    from agents.dqn import RefinementDQN

    return RefinementDQN(env, **kwargs)


def _random(env: Any, **kwargs: Any) -> Any:
    from agents.heuristics import RandomAgent

    return RandomAgent(env, seed=kwargs.pop("seed", None))


def _oracle(env: Any, **kwargs: Any) -> Any:
    from agents.heuristics import OracleAgent

    kwargs.pop("seed", None)
    return OracleAgent(env, **kwargs)


for _name in ("dqn", "ppo", "a2c", "maskable-ppo", "qrdqn"):
    register_agent(_name, _sb3_factory(_name))
register_agent("mmir-dqn", _mmir_dqn)
register_agent("random", _random)
register_agent("oracle", _oracle)
