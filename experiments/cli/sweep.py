"""``mmir sweep``: a grid of methods x domain pairs x seeds, sequential or in parallel, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_METHODS = "source-only,adversarial-only,mmd,adabn,mcd,mm-sada,mmir"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep", help="run methods x domain pairs x seeds (resumable; --jobs for parallel processes), then `mmir report`",
        description="Run a grid of co-training runs. Finished runs are skipped and interrupted ones continue from their "
                    "checkpoints, so running the same command again completes a sweep. Methods whose stage 1 is the same share it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated names from experiments.methods")
    p.add_argument("--pairs", default="synthetic",
                   help="comma-separated: 'synthetic' (generated video domains, CPU-sized), paper pairs such as D2-D1 "
                        "(need --data-root), or run config .toml paths")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep folder")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (the CPU threads are split between them)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0: torch's default, divided by --jobs); use fewer when other work shares the machine")
    p.add_argument("--data-root", default="", help="EPIC-layout folder for the paper pairs")
    p.add_argument("--stage1-steps", type=int, default=150, help="synthetic pair: stage-1 steps")
    p.add_argument("--stage2-steps", type=int, default=200, help="synthetic pair: stage-2 steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every run (TOML syntax), e.g. --set stage2.steps=100")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is already done, run nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, parse_overrides
    from experiments.methods import get_method
    from experiments.sweep import SweepOptions, is_done, plan, run_sweep

    if args.seeds < 1 or args.jobs < 1 or args.threads < 0:
        raise CLIError("--seeds and --jobs must be >= 1 and --threads >= 0")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip())
    try:
        for m in methods:
            get_method(m)
        options = SweepOptions(out=args.out, methods=methods, pairs=pairs, seeds=tuple(range(args.seeds)), data_root=args.data_root,
                               stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps,
                               overrides=tuple(parse_overrides(args.overrides).items()))
        console = Console()
        if args.dry_run:
            stage1, stage2 = plan(options)
            for job in stage1 + stage2:
                console.print(f"{'done   ' if is_done(job) else 'to run '} {job.label}")
            return 0
        run_sweep(options, jobs=args.jobs, console=console, threads=args.threads)
    except ConfigError as err:
        raise CLIError(str(err)) from err
    console.print(f"done: `mmir report {args.out}` prints the tables")
    return 0
