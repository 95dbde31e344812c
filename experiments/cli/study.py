"""``mmir study``: train agents on the instance-refinement environment and tabulate their selections."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from features.atomic_io import atomic_write_text, json_text

DEFAULT_LOGIT_NOISE = 1.0  # the synthetic benchmark's discriminator drift (mmir_env.synthetic_env)

EXAMPLES = """\
examples:
  mmir study                                      # random and oracle on the synthetic benchmark
  mmir study --agent mmir-dqn,dqn --timesteps 20000 --seeds 3 --out runs/study
  mmir study --snapshot runs/D2-D1/snapshots/step000800.h5 --modality flow --agent mmir-dqn
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesFormatter

    p = sub.add_parser(
        "study",
        help="train agents on the refinement env and report precision/recall against planted negatives",
        description="Train each agent (any registered algorithm) on the instance-refinement environment of the "
        "synthetic benchmark or of a snapshot, evaluate it greedily, and print mean +- std over seeds.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    p.add_argument(
        "--agent",
        default="random,oracle",
        help="comma-separated registered agents (default: %(default)s; e.g. mmir-dqn,dqn,ppo,maskable-ppo)",
    )
    p.add_argument(
        "--timesteps",
        type=int,
        default=50_000,
        help="training env steps per agent, domain and seed (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=1, help="number of seeds: --seed, --seed+1, ... (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="data seed and first agent seed (default: %(default)s)")
    p.add_argument(
        "--episodes", type=int, default=2000, help="greedy evaluation episodes per run (default: %(default)s)"
    )
    p.add_argument(
        "--domain",
        choices=("source", "target", "both"),
        default="both",
        help="S-agent, T-agent or both (default: %(default)s)",
    )
    p.add_argument(
        "--num-envs",
        type=int,
        default=1024,
        help="candidate sets per step of mmir-dqn's batched env (default: %(default)s)",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        default=None,
        help="replay candidate sets from this HDF5 snapshot instead of the synthetic source",
    )
    p.add_argument("--modality", default="rgb", help="snapshot modality (default: %(default)s)")
    p.add_argument(
        "--mode",
        choices=("random", "epoch"),
        default="random",
        help="snapshot sampling: independent sets or the co-training layout (default: %(default)s)",
    )
    p.add_argument("--n-c", type=int, default=5, dest="n_c", help="candidate-set size n_c (default: %(default)s)")
    p.add_argument("-E", type=int, default=1, dest="E", help="selections per episode E (default: %(default)s)")
    p.add_argument("--tau", type=float, default=0.5, help="relevance threshold tau (default: %(default)s)")
    p.add_argument(
        "--reward", choices=("threshold", "rank"), default="threshold", help="reward variant (default: %(default)s)"
    )
    p.add_argument(
        "--logit-noise",
        type=float,
        default=DEFAULT_LOGIT_NOISE,
        help="discriminator drift, std of logit noise; 0 = frozen (default: %(default)s)",
    )
    p.add_argument(
        "--feature-dim", type=int, default=1024, help="feature dimension d of the synthetic data (default: %(default)s)"
    )
    p.add_argument("--out", type=Path, default=None, help="write results.json and every trained agent (save) here")
    p.set_defaults(func=run)


def build_source(args: argparse.Namespace) -> Any:
    from experiments.cli.common import CLIError

    try:
        if args.snapshot is not None:
            from mmir_env import SnapshotSource

            if not args.snapshot.exists():
                raise CLIError(f"snapshot file not found: {args.snapshot}")
            return SnapshotSource(args.snapshot, modality=args.modality, mode=args.mode)
        from mmir_env import make_synthetic_source

        return make_synthetic_source(seed=args.seed, feature_dim=args.feature_dim)
    except (TypeError, ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err


def run(args: argparse.Namespace) -> int:
    from agents.registry import registered_agents
    from experiments.cli.common import CLIError, check_output_folder
    from experiments.study import summarize, train_and_evaluate
    from features.atomic_io import DiskFullError
    from mmir_env.env import InstanceRefinementEnv

    names = [a.strip() for a in args.agent.split(",") if a.strip()]
    known = registered_agents()
    unknown = [a for a in names if a not in known]
    if unknown or not names:
        raise CLIError(f"unknown agent(s) {unknown or args.agent!r}; registered agents: {', '.join(known)}")
    for flag, value, minimum in (
        ("--episodes", args.episodes, 1),
        ("--seeds", args.seeds, 1),
        ("--timesteps", args.timesteps, 0),
        ("--num-envs", args.num_envs, 1),
    ):
        if value < minimum:
            raise CLIError(f"{flag} must be >= {minimum}, got {value}")
    if args.out is not None:  # before any training: the trained agents and results must have somewhere to go
        check_output_folder(args.out, "--out")
    console = Console()
    domains = ("source", "target") if args.domain == "both" else (args.domain,)
    source = build_source(args)
    env_kwargs = dict(n_c=args.n_c, E=args.E, tau=args.tau, reward=args.reward, logit_noise=args.logit_noise)
    try:
        for d in domains:  # validate the env arguments once, before any training
            InstanceRefinementEnv(source, domain=d, **env_kwargs)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err

    results = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        for name in names:
            for domain in domains:
                for seed in range(args.seed, args.seed + args.seeds):
                    task = progress.add_task(f"{name} / {domain} / seed {seed}", total=args.timesteps or 1)
                    agent, result = train_and_evaluate(
                        name,
                        source,
                        domain,
                        seed,
                        args.timesteps,
                        args.episodes,
                        env_kwargs,
                        num_envs=args.num_envs,
                        on_progress=lambda n, t=task: progress.update(t, completed=n),
                    )
                    progress.update(task, completed=args.timesteps or 1)
                    results.append(result)
                    if args.out is not None and hasattr(agent, "save"):
                        _save_agent(agent, args.out / "agents" / f"{name}-{domain}-seed{seed}")
    rows = summarize(results)
    console.print(_table(rows, args, source))
    if args.out is not None:
        payload = {
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
            "summary": rows,
            "runs": [r.as_dict() for r in results],
        }
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out / "results.json", json_text(payload, indent=2))
        except DiskFullError as err:
            raise CLIError(f"{err}; the table above is the result: free some space to keep it as JSON") from None
        except OSError as err:
            raise CLIError(f"cannot write {args.out / 'results.json'}: {err.strerror or err}") from None
        console.print(f"results written to {args.out / 'results.json'}")
    return 0


def _save_agent(agent: Any, stem: Path) -> None:
    """Save a trained agent as ``stem`` (+ ``.pt``, or SB3's ``.zip``); a failed save is one line naming the file."""
    from agents.dqn import RefinementDQN
    from experiments.cli.common import CLIError
    from features.atomic_io import DiskFullError

    suffix = ".pt" if isinstance(agent, RefinementDQN) else ""  # SB3 appends .zip itself
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        agent.save(stem.with_name(stem.name + suffix))
    except DiskFullError as err:
        raise CLIError(f"{err}; free some space and run the study again") from None
    except OSError as err:
        raise CLIError(f"cannot save the agent {stem.with_name(stem.name + suffix)}: {err.strerror or err}") from None


def _table(rows: list[dict[str, Any]], args: argparse.Namespace, source: Any) -> Table:
    origin = f"snapshot {args.snapshot.name} ({args.modality}, {args.mode})" if args.snapshot else "synthetic benchmark"
    table = Table(title=f"Instance refinement on the {origin}", title_style="bold")
    for col in ("agent", "domain", "reward", "precision %", "recall %", "invalid %", "train steps/s", "wall s"):
        if col in ("agent", "domain"):
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, justify="right")
    for r in rows:
        one = r["seeds"] == 1
        table.add_row(
            r["agent"],
            r["domain"],
            _ms(r["reward"], "{:+.3f}", one),
            _ms(r["precision"], "pct", one),
            _ms(r["recall"], "pct", one),
            _ms(r["invalid_rate"], "pct", one),
            _ms(r["train_steps_per_second"], "{:,.0f}", one),
            _ms(r["train_seconds"], "{:.1f}", one),
        )
    notes = [
        f"n_c={args.n_c}, E={args.E}, tau={args.tau}, {args.reward} reward, drift {args.logit_noise}; "
        f"{args.timesteps:,} training steps; {args.episodes:,} greedy episodes; "
        + ("one seed" if args.seeds == 1 else f"mean ± std over {args.seeds} seeds")
    ]
    fractions = getattr(source, "negative_fraction", None)
    if fractions:
        notes.append(
            "planted negatives "
            + ", ".join(f"{d} {v:.1%}" for d, v in fractions.items())
            + " (random's expected precision); oracle = argmin relevance, the best the reward can teach"
        )
    table.caption = "\n".join(notes)
    return table


def _ms(pair: tuple[float, float], fmt: str, mean_only: bool) -> str:
    """``mean ± std`` (``mean`` alone for one seed); ``fmt="pct"`` shows fractions as percentages."""
    mean, std = pair
    if math.isnan(mean):
        return "-"
    if fmt == "pct":
        fmt, mean, std = "{:.1f}", 100.0 * mean, 100.0 * std
    text = fmt.format(mean)
    return text if mean_only else f"{text} ± {fmt.format(std).lstrip('+')}"
