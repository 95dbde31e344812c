"""``mmir demo``: the main job. For now an agent study on the synthetic benchmark."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job: random vs oracle agents on the synthetic refinement benchmark",
                       description="Run the main demonstration on CPU in under a minute.")
    p.add_argument("--episodes", type=int, default=2000, help="episodes per agent and domain (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from experiments.cli import study

    ns = argparse.Namespace(agent="random,oracle", episodes=args.episodes, seed=args.seed, domain="both", n_c=5, E=1,
                            tau=0.5, reward="threshold", feature_dim=1024)
    return study.run(ns)
