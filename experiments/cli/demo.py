"""``mmir demo``: the main job -- source-only vs adversarial-only vs MMIR (paper and robust) co-trained on synthetic video."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: wall time of `mmir demo` with its defaults on a quiet 2-core machine, data generation included (README)
DEMO_SECONDS_MEASURED = 268

EXAMPLES = """\
examples:
  mmir demo                                       # about 5 minutes on 2 CPU cores
  mmir demo --stage1-steps 50 --stage2-steps 50 --benchmark-seeds 0   # a quick look
  mmir demo --out runs/demo2 --seed 1 --data-root data/synthetic
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesFormatter

    p = sub.add_parser(
        "demo",
        help="the main job: co-train source-only, adversarial-only, MMIR and MMIR robust on synthetic video (CPU, minutes)",
        description="Generate (once, cached in $MMIR_CACHE or ~/.cache/mmir) two synthetic video domains in the EPIC layout with "
        "planted negatives, co-train tiny two-stream I3D models with source-only, adversarial-only, MMIR and MMIR robust "
        "(the mmir-robust refinement design; one shared stage 1), "
        "and print a Table-3-style comparison with the agents' precision and recall against the planted negatives; then the "
        "feature-level negative-transfer benchmark (adversarial-only, MMIR, mmir-robust, random removal, ground-truth removal, "
        "clean data) "
        "over --benchmark-seeds seeds with paired 95% intervals.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the runs (default: %(default)s)")
    p.add_argument("--stage1-steps", type=int, default=150, help="shared stage-1 steps (default: %(default)s)")
    p.add_argument("--stage2-steps", type=int, default=200, help="stage-2 steps per method (default: %(default)s)")
    p.add_argument(
        "--data-root", type=Path, default=None, help="use or create the synthetic domains here instead of the cache"
    )
    p.add_argument(
        "--benchmark-seeds",
        type=int,
        default=10,
        help="seeds of the feature-level negative-transfer benchmark part (0: skip it; default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from experiments.cli.common import CLIError, check_output_folder
    from experiments.demo import demo_table, run_demo

    if args.stage1_steps < 1 or args.stage2_steps < 1:
        raise CLIError("--stage1-steps and --stage2-steps must be >= 1")
    if args.benchmark_seeds < 0 or args.benchmark_seeds == 1:
        raise CLIError("--benchmark-seeds must be 0 (skip) or >= 2 (paired intervals need two seeds)")
    check_output_folder(args.out, "--out")
    console = Console()
    default = (args.stage1_steps, args.stage2_steps, args.benchmark_seeds) == (150, 200, 10)
    console.print(
        f"mmir demo: one shared stage 1 ({args.stage1_steps} steps) of a tiny two-stream I3D on two synthetic video "
        f"domains, then stage 2 ({args.stage2_steps} steps) for source-only, adversarial-only, MMIR and MMIR robust"
        + (f"; then the feature benchmark over {args.benchmark_seeds} seeds" if args.benchmark_seeds else "")
        + (
            f". Expected: {DEMO_SECONDS_MEASURED // 60 + 1} minutes or less on a quiet 2-core CPU "
            f"({DEMO_SECONDS_MEASURED} s measured with these defaults; the first run also generates the data)."
            if default
            else ". Expected time: it grows with the steps and seeds; the defaults take about 5 minutes on 2 cores."
        )
    )
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_demo(
        args.out,
        seed=args.seed,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        console=console,
        data_root=args.data_root,
    )
    share = next((r["negative_share"] for r in rows if "negative_share" in r), None)
    console.print(demo_table(rows, share))
    if args.benchmark_seeds:
        from experiments.demo import run_benchmark_part

        console.print(run_benchmark_part(args.out, args.benchmark_seeds, console=console), highlight=False)
    console.print(
        f"runs, metrics (JSON lines), the MMIR snapshot and results.json are in {args.out}; "
        f"wall time {time.perf_counter() - start:.0f} s"
    )
    return 0
