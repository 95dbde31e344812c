"""Do the agents' defaults learn? Selection precision after N env steps on the single env, beside the oracle.

Each agent is built as a user would build it, ``make_agent(name, gym.make("mmir/SyntheticRefinement-v0"),
seed=s)`` with its defaults, trained for ``--timesteps`` env steps, then evaluated greedily on
``--episodes`` episodes seeded ``5000 + s`` (``experiments.study.evaluate_selection``); the oracle
(argmin relevance, the best the reward can teach) and random are evaluated on the same episodes.
Prints one row per (agent, seed) and the mean gap to the oracle per agent.

    python benchmarks/agent_defaults.py [--agents mmir-dqn,ppo] [--seeds 0,1,2] [--timesteps 20000]
        [--episodes 400] [--set learning_rate=3e-4 --set batch_size=64]   # --set: mmir-dqn keywords
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import mmir_env  # noqa: F401  (registers the environments)
from agents import OracleAgent, RandomAgent, make_agent, registered_agents
from experiments.study import evaluate_selection

EVAL_SEED = 5000


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are Python literals (``3e-4``, ``None``, ``{'hidden_dim': 128}``) or strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"agent_defaults.py: error: --set {item!r}: expected key=value", file=sys.stderr)
            raise SystemExit(2)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def run(
    name: str, seed: int, timesteps: int, episodes: int, eval_env: Any, overrides: dict[str, Any]
) -> tuple[float, float]:
    """Train ``name`` for ``timesteps`` env steps with seed ``seed``; return (precision, seconds)."""
    env = gym.make("mmir/SyntheticRefinement-v0")
    kwargs = overrides if name == "mmir-dqn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = make_agent(name, env, seed=seed, **kwargs)
        start = time.perf_counter()
        agent.learn(total_timesteps=timesteps)
        seconds = time.perf_counter() - start
    return evaluate_selection(agent, eval_env, episodes, seed=EVAL_SEED + seed).precision, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="mmir-dqn,ppo", help="comma-separated agent names (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: %(default)s)")
    parser.add_argument(
        "--timesteps", type=int, default=20_000, help="env steps per training run (default: %(default)s)"
    )
    parser.add_argument("--episodes", type=int, default=400, help="greedy evaluation episodes (default: %(default)s)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a RefinementDQN keyword for mmir-dqn (repeatable)",
    )
    args = parser.parse_args(argv)
    agents = [a for a in args.agents.split(",") if a]
    unknown = sorted(set(agents) - set(registered_agents()))
    if not agents or unknown:
        parser.error(
            f"--agents {args.agents!r}: unknown {unknown}; registered agents: {', '.join(registered_agents())}"
        )
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    if not seeds or args.timesteps < 1 or args.episodes < 1:
        parser.error("--seeds needs at least one seed; --timesteps and --episodes must be >= 1")
    overrides = parse_sets(args.set)

    console = Console()
    eval_env = gym.make("mmir/SyntheticRefinement-v0")
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; mmir/SyntheticRefinement-v0 defaults; "
        f"{args.timesteps:,} env steps; {args.episodes} greedy episodes seeded {EVAL_SEED}+seed"
        + (f"; mmir-dqn overrides {overrides}" if overrides else "")
    )
    table = Table(title="Selection precision after training (single env)")
    for col in ("agent", "seed", "precision", "oracle", "random", "gap to oracle", "train s"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    gaps: dict[str, list[float]] = {name: [] for name in agents}
    for seed in seeds:
        oracle = evaluate_selection(OracleAgent(eval_env), eval_env, args.episodes, seed=EVAL_SEED + seed).precision
        random = evaluate_selection(RandomAgent(seed=seed), eval_env, args.episodes, seed=EVAL_SEED + seed).precision
        for name in agents:
            precision, seconds = run(name, seed, args.timesteps, args.episodes, eval_env, overrides)
            gaps[name].append(oracle - precision)
            table.add_row(
                name,
                str(seed),
                f"{precision:.3f}",
                f"{oracle:.3f}",
                f"{random:.3f}",
                f"{oracle - precision:+.3f}",
                f"{seconds:.0f}",
            )
            print(
                f"agent={name} seed={seed} precision={precision:.4f} oracle={oracle:.4f} random={random:.4f} seconds={seconds:.1f}",
                file=sys.stderr,
                flush=True,
            )
    console.print(table)
    for name, g in gaps.items():
        console.print(
            f"{name}: mean gap to the oracle {np.mean(g):+.3f} (min {np.min(g):+.3f}, max {np.max(g):+.3f}) over seeds {seeds}"
        )


if __name__ == "__main__":
    main()
