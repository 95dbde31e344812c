"""``mmir train CONFIG``: one co-training run from a TOML configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="co-train a two-stream model from a TOML config (stage 1, stage 2, evaluations, snapshots)",
                       description="Run a co-training configuration (see experiments/configs/ and docs/configs.md).")
    p.add_argument("config", type=Path, help="TOML file, e.g. experiments/configs/paper/D2-D1.toml")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt exactly where it stopped")
    p.add_argument("--method", default=None, metavar="NAME",
                   help="apply a method of experiments.methods on top of CONFIG (source-only, adversarial-only, mmd, adabn, mcd, "
                        "mm-sada, mmir, supervised-target, or a Table 2 ablation such as mmir-no-rgb-agents), or a TOML overlay file "
                        "of your own (docs/add-your-own-method.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.root=/data/epic --set stage2.steps=100 (TOML syntax for the value)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.progress import progress_hook, training_progress

    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, load_config, parse_overrides
    from experiments.cotrain import CoTrainer

    try:
        cfg = load_config(args.config, parse_overrides(args.overrides))
        if args.method is not None:
            from experiments.methods import apply_method

            cfg = apply_method(cfg, args.method)
    except ConfigError as err:
        raise CLIError(str(err)) from err
    console = Console()
    with training_progress(console) as progress:
        tasks = {1: progress.add_task("stage 1", total=cfg.stage1.steps, info=""),
                 2: progress.add_task("stage 2", total=cfg.stage2.steps, info="")}
        on_step = progress_hook(progress, tasks)
        try:
            trainer = CoTrainer(cfg, on_step=on_step)
            summary = trainer.run(resume=args.resume)
        except (ConfigError, FileNotFoundError) as err:
            raise CLIError(str(err)) from err
    console.print(f"target top-1 (mean of the last {summary['evaluations_averaged']} evaluations): {summary['top1_last']:.1%}; "
                  f"mean class accuracy {summary['mean_class_accuracy_last']:.1%}; run folder {trainer.run_dir}")
    return 0
