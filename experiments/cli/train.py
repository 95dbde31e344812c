"""``mmir train CONFIG``: one co-training run from a TOML configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="co-train a two-stream model from a TOML config (stage 1, stage 2, evaluations, snapshots)",
        description="Run a co-training configuration (see experiments/configs/ and docs/configs.md). The run folder "
        "(output_dir/name) is locked while the run trains; a folder that already holds a run is only "
        "continued (--resume) or replaced (--overwrite). TensorBoard event files go to RUN/tensorboard.",
    )
    p.add_argument("config", type=Path, help="TOML file, e.g. experiments/configs/paper/D2-D1.toml")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's newest state (checkpoint.pt, else stage1.pt) exactly where it stopped; "
        "the config must be the stored config.json's up to stage1.steps / stage2.steps",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in the run folder (its checkpoints, metrics, snapshots)",
    )
    p.add_argument(
        "--method",
        default=None,
        metavar="NAME",
        help="apply a method of experiments.methods on top of CONFIG (source-only, adversarial-only, mmd, adabn, mcd, "
        "mm-sada, mmir, supervised-target, or a Table 2 ablation such as mmir-no-rgb-agents), or a TOML overlay file "
        "of your own (docs/add-your-own-method.md)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.root=/data/epic --set stage2.steps=100 (TOML syntax for the value; "
        "a bare word is a string only for string keys)",
    )
    p.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard event files (RUN/tensorboard)")
    p.add_argument(
        "--log-every",
        type=int,
        default=100,
        metavar="N",
        help="when stdout is not a terminal (nohup, CI, cluster logs): one plain progress line every N steps",
    )
    p.set_defaults(func=run)


def training_hooks(run_dir: Path, stage1_steps: int, tensorboard: bool, note: Any) -> tuple[list[Any], Any]:
    """The TensorBoard writer as an ``on_step`` hook (none when switched off, not installed, or not rank 0) and its closer."""
    import os

    from experiments.tensorboard_log import INSTALL_HINT, TensorBoardLog, tensorboard_available

    if not tensorboard or int(os.environ.get("RANK", "0")) != 0:
        return [], lambda: None
    if not tensorboard_available():
        note(INSTALL_HINT)
        return [], lambda: None
    log = TensorBoardLog(run_dir, stage1_steps)
    return [log], log.close


def run(args: argparse.Namespace) -> int:
    import errno
    from contextlib import nullcontext

    from rich.console import Console

    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, load_config, parse_overrides
    from experiments.cotrain import CoTrainer
    from experiments.progress import plain_log_hook, progress_hook, training_progress
    from experiments.runs import CheckpointError, RunFolderError, RunLock, prepare_run_folder
    from features.atomic_io import DiskFullError
    from features.data.epic import FrameReadError

    if args.log_every < 1:
        raise CLIError(f"--log-every must be >= 1, got {args.log_every}")
    try:
        cfg = load_config(args.config, parse_overrides(args.overrides))
        if args.method is not None:
            from experiments.methods import apply_method

            cfg = apply_method(cfg, args.method)
    except ConfigError as err:
        raise CLIError(str(err)) from err
    console = Console()
    run_dir = cfg.run_dir()
    hooks, close = training_hooks(
        run_dir, cfg.stage1.steps, not args.no_tensorboard, lambda m: console.print(m, highlight=False)
    )
    interactive = console.is_terminal
    try:
        with RunLock(run_dir):
            prepare_run_folder(run_dir, cfg.to_dict(), args.resume, args.overwrite)
            with training_progress(console) if interactive else nullcontext() as progress:
                if progress is not None:
                    tasks = {
                        1: progress.add_task("stage 1", total=cfg.stage1.steps, info=""),
                        2: progress.add_task("stage 2", total=cfg.stage2.steps, info=""),
                    }
                    shown = progress_hook(progress, tasks)
                else:
                    shown = plain_log_hook(
                        {1: cfg.stage1.steps, 2: cfg.stage2.steps}, args.log_every, lambda line: print(line, flush=True)
                    )

                def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
                    shown(stage, step, metrics)
                    for hook in hooks:
                        hook(stage, step, metrics)

                trainer = CoTrainer(cfg, on_step=on_step)
                summary = trainer.run(resume=args.resume)
    except (ConfigError, FileNotFoundError, RunFolderError, CheckpointError, DiskFullError, FrameReadError) as err:
        raise CLIError(str(err)) from err
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise CLIError(f"no space left on device writing {err.filename or 'the run folder ' + str(run_dir)}") from err
    finally:
        close()
    if summary["top1_last"] is None:
        console.print(f"no target evaluation (stage2.steps = {cfg.stage2.steps}); run folder {trainer.run_dir}")
    else:
        console.print(
            f"target top-1 (mean of the last {summary['evaluations_averaged']} evaluations): {summary['top1_last']:.1%}; "
            f"mean class accuracy {summary['mean_class_accuracy_last']:.1%}; run folder {trainer.run_dir}"
        )
    return 0
