"""``mmir train CONFIG``: one co-training run from a TOML configuration."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from experiments.config_layers import add_set_option

EXAMPLES = """\
examples:
  mmir train experiments/configs/paper/D2-D1.toml --set data.root=/data/epic
  mmir train experiments/configs/paper/D2-D1.toml --method mmd --set data.root=/data/epic --set name=D2-D1-mmd
  mmir train my-run.toml --resume                 # continue an interrupted run where it stopped
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesFormatter

    p = sub.add_parser(
        "train",
        help="co-train a two-stream model from a TOML config (stage 1, stage 2, evaluations, snapshots)",
        description="Run a co-training configuration (see experiments/configs/ and docs/configs.md). The run folder "
        "(output_dir/name) is locked while the run trains; a folder that already holds a run is only "
        "continued (--resume) or replaced (--overwrite). TensorBoard event files go to RUN/tensorboard.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
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
    add_set_option(
        p,
        "override a config value, e.g. --set data.root=/data/epic --set stage2.steps=100 (TOML syntax for the value; "
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


def command_line(args: argparse.Namespace) -> str:
    """The ``mmir train`` command line of this run (config, method, overrides): what continues it with ``--resume``."""
    words = ["mmir", "train", str(args.config)]
    if args.method is not None:
        words += ["--method", args.method]
    for item in args.overrides:
        words += ["--set", item]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    import os

    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, load_config, parse_overrides

    # The config and the paths first, before torch is imported (over a second): a typo is reported at once.
    if args.log_every < 1:
        raise CLIError(f"--log-every must be >= 1, got {args.log_every}")
    try:
        cfg = load_config(args.config, parse_overrides(args.overrides))
        if args.method is not None:
            from experiments.methods import apply_method

            cfg = apply_method(cfg, args.method)
    except ConfigError as err:
        raise CLIError(str(err)) from err
    problem = input_problem(cfg)
    if problem is not None:
        raise CLIError(problem)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes the run folder
    if main_rank:
        from experiments.runs import run_folder_problem

        problem = run_folder_problem(cfg.run_dir(), args.resume, args.overwrite)
        if problem is not None:
            raise CLIError(problem)
        if args.resume and not cfg.run_dir().is_dir():
            raise CLIError(
                f"--resume: there is no run folder {cfg.run_dir()}; check output_dir and name "
                "(the folder is output_dir/name), or start the run without --resume"
            )
    return _train(args, cfg, main_rank)


def input_problem(cfg: Any) -> str | None:
    """What is wrong with a path the run reads that a glance can tell (a folder where a file belongs), else None."""
    if cfg.data.kind == "features":  # snapshots: one file each, where other kinds take a folder
        for key in ("root", "test_features"):
            value = getattr(cfg.data, key)
            if value and Path(value).expanduser().is_dir():
                return (
                    f'data.{key} {value!r} is a folder; data.kind = "features" reads a snapshot file there '
                    "(.h5, e.g. RUN/snapshots/step000800.h5 of a co-training run)"
                )
    return None


def _train(args: argparse.Namespace, cfg: Any, main_rank: bool) -> int:
    from contextlib import ExitStack, nullcontext

    from rich.console import Console

    from experiments.cli.common import CLIError, Interrupted, Terminated
    from experiments.config import ConfigError
    from experiments.cotrain import CoTrainer
    from experiments.progress import plain_log_hook, progress_hook, training_progress
    from experiments.runs import (
        CheckpointError,
        RunFolderError,
        RunLock,
        existing_run_files,
        one_line,
        prepare_run_folder,
        saved_state,
    )
    from features.atomic_io import DiskFullError, is_disk_full
    from features.data.epic import FrameReadError

    console = Console()
    run_dir = cfg.run_dir()
    command = command_line(args)
    trainer: Any = None
    resume = args.resume
    close: Any = lambda: None  # noqa: E731
    try:
        with ExitStack() as stack:
            if main_rank:  # refuse early, before building anything: the check is repeated under the lock
                prepare_run_folder(run_dir, cfg.to_dict(), args.resume, args.overwrite, clear=False)
            trainer = CoTrainer(cfg)
            if main_rank:
                stack.enter_context(RunLock(run_dir))
                prepare_run_folder(run_dir, cfg.to_dict(), args.resume, args.overwrite, clear=False)
                found = existing_run_files(run_dir)
                if args.resume and found and not saved_state(run_dir):
                    resume = False  # stopped before its first checkpoint: continuing it is starting it again
                    console.print(
                        f"{run_dir} holds a run that stopped before its first checkpoint: starting it from step 1",
                        highlight=False,
                    )
                elif not args.resume and not args.overwrite and found:
                    console.print(
                        f"{run_dir} holds a run that stopped before its first checkpoint ({', '.join(found)}): "
                        "starting it again",
                        highlight=False,
                    )
                prepare_run_folder(run_dir, cfg.to_dict(), resume, args.overwrite)
            hooks, close = training_hooks(
                run_dir, cfg.stage1.steps, not args.no_tensorboard, lambda m: console.print(m, highlight=False)
            )
            interactive = console.is_terminal
            progress = stack.enter_context(training_progress(console) if interactive else nullcontext())
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

            trainer.on_step = on_step
            summary = trainer.run(resume=resume)
            close()  # the last TensorBoard events are written here: a failure is this run's error
    except KeyboardInterrupt as err:
        _close_quietly(close)
        raise Interrupted(
            interrupted_message(trainer, run_dir, command), 143 if isinstance(err, Terminated) else 130
        ) from None
    except DiskFullError as err:
        _close_quietly(close)
        raise CLIError(f"{err}; free some space, then continue with `{command} --resume`") from None
    except (ConfigError, FileNotFoundError, RunFolderError, CheckpointError, FrameReadError) as err:
        _close_quietly(close)
        raise CLIError(str(err)) from err
    except OSError as err:
        _close_quietly(close)
        if is_disk_full(err):
            raise CLIError(
                f"no space left on device writing {err.filename or 'into ' + str(run_dir)}; "
                f"free some space, then continue with `{command} --resume`"
            ) from None
        raise CLIError(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else one_line(err)) from None
    except BaseException:
        _close_quietly(close)
        raise
    if summary["top1_last"] is None:
        console.print(f"no target evaluation (stage2.steps = {cfg.stage2.steps}); run folder {trainer.run_dir}")
    else:
        console.print(
            f"target top-1 (mean of the last {summary['evaluations_averaged']} evaluations): {summary['top1_last']:.1%}; "
            f"mean class accuracy {summary['mean_class_accuracy_last']:.1%}; run folder {trainer.run_dir}"
        )
    return 0


def _close_quietly(close: Any) -> None:
    """Close the TensorBoard log while another error is reported: its own failure would only hide that one."""
    try:
        close()
    except Exception:
        pass


def interrupted_message(trainer: Any, run_dir: Path, command: str) -> str:
    """Where an interrupted run stopped, and how to continue it: ``--resume`` from its last saved state, or a new start."""
    from experiments.runs import CheckpointError, read_checkpoint, resume_state, saved_state

    where = f"at stage {trainer.stage} step {trainer.step}" if trainer is not None else "before training started"
    try:
        latest = resume_state(run_dir)
    except FileNotFoundError:
        latest = None
    except (CheckpointError, OSError):  # a checkpoint is damaged: --resume will say which
        return f"interrupted {where}; resume with `{command} --resume`"
    if latest is None:
        if saved_state(run_dir):  # finished: only its summary
            return f"interrupted {where}; the run in {run_dir} had finished"
        return (
            f"interrupted {where}, before the run's first checkpoint: nothing to resume; "
            f"`{command}` starts it again (no --overwrite needed)"
        )
    try:
        state = read_checkpoint(latest, mmap=True)
        since = f" (it continues from stage {int(state['stage'])} step {int(state['step'])}, saved in {latest.name})"
    except (CheckpointError, OSError, KeyError, ValueError):
        since = ""
    return f"interrupted {where}; resume with `{command} --resume`{since}"
