"""Performance target 2 (docs/architecture.md): env steps/s of mmir-dqn on the batched env vs SB3 DQN on the single env.

Both train on the same synthetic data (mmir/SyntheticRefinement-v0 defaults: d=1024, n_c=5, E=1,
drift 1.0) for the same number of env steps, measured side by side in one run; then both are
evaluated greedily on the same episodes. Prints the throughput ratio (target >= 50) and both
agents' selection precision next to the oracle's.

    python benchmarks/agent_throughput.py [--timesteps 20000] [--num-envs 1024] [--episodes 2000]
    python benchmarks/agent_throughput.py --device cuda --json agents.json    # the agent loop on a GPU
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from agents import OracleAgent, RandomAgent, make_agent
from experiments.study import evaluate_selection
from mmir_env import BatchedRefinementEnv, InstanceRefinementEnv, make_synthetic_source
from mmir_env.synthetic_env import SYNTHETIC_LOGIT_NOISE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--timesteps", type=int, default=20_000, help="env steps each agent trains for (default: %(default)s)"
    )
    parser.add_argument(
        "--num-envs", type=int, default=1024, help="candidate sets per batched step (default: %(default)s)"
    )
    parser.add_argument("--episodes", type=int, default=2000, help="greedy evaluation episodes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto, for both agents and the batched env")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.device not in ("cpu", "cuda", "auto"):
        parser.error(f"--device must be cpu, cuda or auto, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )

    console = Console()
    source = make_synthetic_source(seed=args.seed)
    env_kwargs = dict(logit_noise=SYNTHETIC_LOGIT_NOISE)
    eval_env = InstanceRefinementEnv(source, **env_kwargs)
    console.print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; data d={source.feature_dim}, n_c=5; "
        f"{args.timesteps:,} env steps per agent"
    )

    rows = []
    # SB3 DQN on the single env (its natural setting), with the candidate-set features extractor.
    single = InstanceRefinementEnv(source, **env_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3 = make_agent("dqn", single, seed=args.seed, device=str(device))
    start = time.perf_counter()
    sb3.learn(args.timesteps)
    sb3_seconds = time.perf_counter() - start
    rows.append(("SB3 dqn, single env", sb3_seconds, evaluate_selection(sb3, eval_env, args.episodes, seed=99)))

    batched = BatchedRefinementEnv(
        source, num_envs=args.num_envs, copy=False, include_final_obs=False, device=device, **env_kwargs
    )
    ours = make_agent("mmir-dqn", batched, seed=args.seed)
    start = time.perf_counter()
    ours.learn(args.timesteps)
    ours_seconds = time.perf_counter() - start
    rows.append(
        (
            f"mmir-dqn, batched env ({args.num_envs} sets/step)",
            ours_seconds,
            evaluate_selection(ours, eval_env, args.episodes, seed=99),
        )
    )

    oracle = evaluate_selection(OracleAgent(eval_env), eval_env, args.episodes, seed=99)
    random = evaluate_selection(RandomAgent(seed=0), eval_env, args.episodes, seed=99)

    table = Table(title="Agent training throughput (performance target 2, docs/architecture.md)")
    for col in ("agent", "env steps", "seconds", "env steps/s", "precision", "vs oracle"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for name, seconds, stats in rows:
        table.add_row(
            name,
            f"{args.timesteps:,}",
            f"{seconds:.2f}",
            f"{args.timesteps / seconds:,.0f}",
            f"{stats.precision:.1%}",
            f"{stats.precision / oracle.precision:.0%}",
        )
    table.add_row("oracle (argmin relevance)", "-", "-", "-", f"{oracle.precision:.1%}", "100%")
    table.add_row("random", "-", "-", "-", f"{random.precision:.1%}", f"{random.precision / oracle.precision:.0%}")
    console.print(table)
    ratio = sb3_seconds / ours_seconds
    console.print(
        f"throughput ratio mmir-dqn / SB3 dqn: [bold]{ratio:.1f}x[/bold] (target >= 50x); "
        f"precision mmir-dqn {rows[1][2].precision:.1%} vs SB3 dqn {rows[0][2].precision:.1%}"
    )
    if args.json is not None:
        record = {
            "device": str(device),
            "timesteps": args.timesteps,
            "num_envs": args.num_envs,
            "agents": {
                name: {"seconds": sec, "env_steps_per_s": args.timesteps / sec, "precision": st.precision}
                for name, sec, st in rows
            },
            "oracle_precision": oracle.precision,
            "random_precision": random.precision,
            "throughput_ratio": ratio,
        }
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
