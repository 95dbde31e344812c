"""``mmir study``: run agents on the instance-refinement environment and tabulate their selections."""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

HEURISTICS = ("random", "oracle")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="run agents on the synthetic refinement env and report precision/recall",
        description="Run each agent for N episodes on the instance-refinement environment built on the "
        "synthetic benchmark (planted negatives with ground truth) and print a table of its selections.",
    )
    p.add_argument("--agent", default="random,oracle", help="comma-separated agents (default: %(default)s; available: random, oracle)")
    p.add_argument("--episodes", type=int, default=2000, help="evaluation episodes per agent and domain (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the discriminator and the episodes (default: %(default)s)")
    p.add_argument("--domain", choices=("source", "target", "both"), default="both", help="S-agent, T-agent or both (default: %(default)s)")
    p.add_argument("--n-c", type=int, default=5, dest="n_c", help="candidate-set size n_c (default: %(default)s)")
    p.add_argument("-E", type=int, default=1, dest="E", help="selections per episode E (default: %(default)s)")
    p.add_argument("--tau", type=float, default=0.5, help="relevance threshold tau (default: %(default)s)")
    p.add_argument("--reward", choices=("threshold", "rank"), default="threshold", help="reward variant (default: %(default)s)")
    p.add_argument("--feature-dim", type=int, default=1024, help="feature dimension d of the synthetic data (default: %(default)s)")
    p.set_defaults(func=run)


def make_heuristic(name: str, env: Any, seed: int) -> Any:
    from agents.heuristics import OracleAgent, RandomAgent

    if name == "random":
        return RandomAgent(env, seed=seed)
    if name == "oracle":
        return OracleAgent(env)
    raise KeyError(name)


def run(args: argparse.Namespace) -> int:
    from experiments.cli import CLIError
    from experiments.study import evaluate_selection
    from mmir_env import InstanceRefinementEnv, make_synthetic_source

    agents = [a.strip() for a in args.agent.split(",") if a.strip()]
    unknown = [a for a in agents if a not in HEURISTICS]
    if unknown or not agents:
        raise CLIError(f"unknown agent(s) {unknown or args.agent!r}; available: {', '.join(HEURISTICS)}")
    if args.episodes < 1:
        raise CLIError(f"--episodes must be >= 1, got {args.episodes}")
    console = Console()
    domains = ("source", "target") if args.domain == "both" else (args.domain,)
    try:
        source = make_synthetic_source(seed=args.seed, feature_dim=args.feature_dim)
        envs = {d: InstanceRefinementEnv(source, domain=d, n_c=args.n_c, E=args.E, tau=args.tau, reward=args.reward) for d in domains}
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err

    table = Table(title=f"Instance refinement on the synthetic benchmark (seed {args.seed}, n_c={args.n_c}, E={args.E}, tau={args.tau}, {args.reward} reward)")
    for col in ("agent", "domain", "episodes", "mean reward", "precision", "recall", "invalid", "steps/s"):
        table.add_column(col, justify="left" if col in ("agent", "domain") else "right")
    negatives = source.negative_fraction
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
        for name in agents:
            for domain in domains:
                task = progress.add_task(f"{name} / {domain}", total=args.episodes)
                agent = make_heuristic(name, envs[domain], args.seed)
                stats = evaluate_selection(agent, envs[domain], args.episodes, seed=args.seed, progress=lambda n, t=task: progress.update(t, completed=n))
                table.add_row(
                    name, domain, str(stats.episodes), f"{stats.mean_episode_reward:+.3f}", _pct(stats.precision),
                    _pct(stats.recall), _pct(stats.invalid_rate), f"{stats.steps_per_second:,.0f}",
                )
    console.print(table)
    console.print(
        "planted negatives: " + ", ".join(f"{d} {negatives[d]:.1%}" for d in domains)
        + " (random's expected precision); oracle = argmin relevance, the best the reward can teach."
    )
    return 0


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"
