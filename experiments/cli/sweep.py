"""``mmir sweep``: a grid of methods x domain pairs x seeds, sequential or in parallel, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.config_layers import add_set_option

DEFAULT_METHODS = "source-only,adversarial-only,mmd,adabn,mcd,mm-sada,mmir"

EXAMPLES = """\
examples:
  mmir sweep --methods source-only,mmir --seeds 2 --out runs/sweep   # the synthetic pair, CPU-sized
  mmir sweep --pairs D2-D1,D3-D1 --data-root /data/epic --jobs 2 --out runs/paper
  mmir sweep --pairs D2-D1 --data-root /data/epic --launcher slurm --slurm-partition gpu --dry-run
  mmir sweep --methods adversarial-only,mmir --set 'evaluation.validators=["snd"]' --select-by snd
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesDefaultsFormatter

    p = sub.add_parser(
        "sweep",
        help="run methods x domain pairs x seeds (resumable; --jobs for parallel processes), then `mmir report`",
        description="Run a grid of co-training runs. Finished runs are skipped and interrupted ones continue from their "
        "checkpoints, so running the same command again completes a sweep. Methods whose stage 1 is the same share it. "
        "Runs are keyed on their resolved config: a run made with other settings (other steps, --set, ...) is never "
        "'already done'; the sweep refuses to start and lists them (--overwrite runs them again). "
        "--launcher slurm submits one Slurm job per run through submitit (stage-1 runs first) with the same "
        "bookkeeping; --launcher submitit-local runs those jobs on this machine. Each run writes TensorBoard "
        "events to RUN/tensorboard (tensorboard --logdir OUT).",
        epilog=EXAMPLES,
        formatter_class=ExamplesDefaultsFormatter,
    )
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated names from experiments.methods")
    p.add_argument(
        "--pairs",
        default="synthetic",
        help="comma-separated: 'synthetic' (generated video domains, CPU-sized), paper pairs such as D2-D1 "
        "(need --data-root), or run config .toml paths",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep folder")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (the CPU threads are split between them)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: torch's default, divided by --jobs); use fewer when other work shares the machine",
    )
    p.add_argument("--data-root", default="", help="EPIC-layout folder for the paper pairs")
    p.add_argument("--stage1-steps", type=int, default=150, help="synthetic pair: stage-1 steps")
    p.add_argument("--stage2-steps", type=int, default=200, help="synthetic pair: stage-2 steps")
    add_set_option(p, "override a config value of every run (TOML syntax), e.g. --set stage2.steps=100")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is already done, run nothing")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="run again the runs made with other settings (else the sweep refuses to start)",
    )
    p.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard event files (RUN/tensorboard)")
    p.add_argument(
        "--select-by",
        default=None,
        metavar="VALIDATOR",
        help="after the sweep, choose each pair's design by a label-free validator the runs recorded (val/VALIDATOR; "
        "evaluation.validators) and print it beside the design target accuracy would choose (docs/validators.md)",
    )
    p.add_argument(
        "--launcher",
        choices=("processes", "slurm", "submitit-local"),
        default="processes",
        help="processes: --jobs processes on this machine; slurm: one Slurm job per run (submitit; --jobs: array "
        "parallelism); submitit-local: the same submitit jobs on this machine (--jobs at a time)",
    )
    slurm = p.add_argument_group("--launcher slurm", "resources of each job (submitit's AutoExecutor parameters)")
    slurm.add_argument("--slurm-partition", default="", help="partition (empty: the cluster's default)")
    slurm.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="time limit of each job in minutes")
    slurm.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job")
    slurm.add_argument(
        "--slurm-cpus", type=int, default=8, help="CPUs per job (also its torch threads unless --threads)"
    )
    slurm.add_argument("--slurm-mem-gb", type=float, default=32.0, help="memory per job in GB")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, parse_overrides
    from experiments.methods import get_method
    from experiments.runs import RunFolderError
    from experiments.sweep import (
        SlurmOptions,
        SweepError,
        SweepOptions,
        check_selection,
        is_done,
        plan,
        run_sweep,
        run_sweep_submitit,
        select_in_sweep,
        stored_differences,
    )
    from features.atomic_io import DiskFullError

    if args.seeds < 1 or args.jobs < 1 or args.threads < 0:
        raise CLIError("--seeds and --jobs must be >= 1 and --threads >= 0")
    if args.slurm_time < 1 or args.slurm_gpus < 0 or args.slurm_cpus < 1 or not args.slurm_mem_gb > 0:
        raise CLIError("--slurm-time and --slurm-cpus must be >= 1, --slurm-gpus >= 0 and --slurm-mem-gb > 0")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip())
    try:
        for m in methods:
            get_method(m)
        options = SweepOptions(
            out=args.out,
            methods=methods,
            pairs=pairs,
            seeds=tuple(range(args.seeds)),
            data_root=args.data_root,
            stage1_steps=args.stage1_steps,
            stage2_steps=args.stage2_steps,
            overrides=tuple(parse_overrides(args.overrides).items()),
            tensorboard=not args.no_tensorboard,
            overwrite=args.overwrite,
        )
        console = Console()
        if args.select_by is not None:
            check_selection(options, args.select_by)  # before hours of training, not after
        if args.dry_run:
            stage1, stage2 = plan(options)
            for job in stage1 + stage2:
                changed = stored_differences(job)
                state = "done   " if is_done(job) else "changed" if changed else "to run "
                console.print(
                    f"{state} {job.label}" + (f"  ({', '.join(changed)})" if changed else ""), highlight=False
                )
            return 0
        if args.launcher == "processes":
            stage2 = run_sweep(options, jobs=args.jobs, console=console, threads=args.threads)
        else:
            resources = SlurmOptions(
                partition=args.slurm_partition,
                time_min=args.slurm_time,
                gpus=args.slurm_gpus,
                cpus=args.slurm_cpus,
                mem_gb=args.slurm_mem_gb,
            )
            stage2 = run_sweep_submitit(
                options, args.launcher, jobs=args.jobs, console=console, threads=args.threads, slurm=resources
            )
        if args.select_by is not None:
            _print_selection(console, select_in_sweep(stage2, args.select_by))
    except (ConfigError, RunFolderError, SweepError) as err:
        raise CLIError(str(err)) from err
    except DiskFullError as err:
        raise CLIError(f"{err}; free some space and run the same command again (finished runs stay done)") from None
    console.print(f"done: `mmir report {args.out}` prints the tables")
    return 0


def _print_selection(console: Any, selections: list[Any]) -> None:  # experiments.report.Selection
    """The designs ranked by the validator, and per pair its choice beside the oracle's (target accuracy)."""
    from experiments.report import selection_table

    console.print(selection_table(selections))
    for selection in selections:
        console.print(selection.text(), highlight=False)
