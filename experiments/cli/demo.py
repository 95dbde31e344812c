"""``mmir demo``: the main job (until co-training lands): learned vs heuristic refinement agents."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job: mmir-dqn vs random and oracle on the synthetic refinement benchmark",
                       description="Train mmir-dqn (S-agent and T-agent) on the batched synthetic refinement env and compare "
                       "its greedy selections with the random and oracle agents. Runs on CPU in about a minute.")
    p.add_argument("--timesteps", type=int, default=200_000, help="mmir-dqn training env steps per domain (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=2000, help="evaluation episodes per agent and domain (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--out", default=None, help="write results.json and the trained agents here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.cli import study

    parser = argparse.ArgumentParser()
    study.register(parser.add_subparsers())
    ns = parser.parse_args(["study", "--agent", "random,oracle,mmir-dqn", "--timesteps", str(args.timesteps),
                            "--episodes", str(args.episodes), "--seed", str(args.seed)])
    ns.out = Path(args.out) if args.out else None
    return study.run(ns)
