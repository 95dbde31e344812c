"""``mmir report RUN_DIR...``: the paper's Tables 1-3 from finished runs, as rich, Markdown and CSV, plus PNG plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  mmir report runs/sweep                          # every finished run below runs/sweep; report.md/.csv there
  mmir report runs/D2-D1-* runs/D3-D1-* --out reports/ --metric mean-class
  mmir report runs/sweep --no-plots               # tables only (no matplotlib needed)
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesDefaultsFormatter

    p = sub.add_parser(
        "report",
        help="tables (paper Tables 1-3 layout) and plots from finished runs",
        description="Collect every finished run below RUN_DIR... (folders with config.json and summary.json) "
        "and print Tables 1-3: methods x domain pairs, mean over seeds ± std, a mean column, best "
        "in bold. Writes report.md and report.csv, and PNG plots with the `plots` extra (matplotlib).",
        epilog=EXAMPLES,
        formatter_class=ExamplesDefaultsFormatter,
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run or sweep folders")
    p.add_argument(
        "--out", type=Path, default=None, help="where report.md, report.csv and plots/ go (default: the first RUN_DIR)"
    )
    p.add_argument("--metric", choices=("top1", "mean-class"), default="top1", help="cell value")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.cli.common import CLIError, check_output_folder
    from experiments.diagnostics_report import diagnostics_table, method_diagnostics, write_diagnostics_plot
    from experiments.report import (
        build_tables,
        caption_text,
        csv_text,
        differences_table,
        find_runs,
        markdown,
        paired_differences,
        recovery_line,
        rich_tables,
        write_plots,
    )
    from features.atomic_io import atomic_write_text

    out = args.out or (args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent)
    check_output_folder(out, "--out" if args.out else "the report folder (the first RUN_DIR; --out moves it)")
    skipped: list[str] = []
    try:
        records = find_runs(args.runs, skipped)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    for reason in skipped:  # one bad run must not hide the others
        print(f"mmir report: warning: skipping {reason}", file=sys.stderr)
    if not records:
        raise CLIError(
            f"no finished runs (folders with config.json and summary.json) below {', '.join(map(str, args.runs))}"
        )
    metric = "top1" if args.metric == "top1" else "mean-class"
    tables = build_tables(records, "top1" if metric == "top1" else "mean_class_accuracy")
    what = "target top-1" if metric == "top1" else "mean class accuracy"
    caption = caption_text(tables, records, what)
    console = Console()
    for table in rich_tables(tables, caption):
        console.print(table)
    diffs = paired_differences(records, metric="top1" if metric == "top1" else "mean_class_accuracy")
    if diffs:
        console.print(differences_table(diffs, what=what))
    recovered = recovery_line(records, metric="top1" if metric == "top1" else "mean_class_accuracy")
    if recovered:
        console.print(recovered, highlight=False)
    diagnostics = method_diagnostics(records)
    if diagnostics:
        console.print(diagnostics_table(diagnostics))
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "report.md",
            markdown(tables, caption)
            + ("\n" + differences_table(diffs, "markdown", what=what) if diffs else "")
            + (f"\n{recovered}\n" if recovered else "")
            + ("\n" + diagnostics_table(diagnostics, "markdown") if diagnostics else ""),
        )
        atomic_write_text(out / "report.csv", csv_text(tables, records))
        console.print(f"wrote {out / 'report.md'} and {out / 'report.csv'}")
        if not args.no_plots:
            try:
                written = write_plots(records, out / "plots")
                if diagnostics:
                    written += [p for p in [write_diagnostics_plot(records, out / "plots")] if p is not None]
            except ImportError as err:
                console.print(f"[yellow]no plots: {err}[/yellow]")
            else:
                console.print(f"plots: {', '.join(str(p) for p in written)}")
    except OSError as err:  # a full disk (the tables above are printed already); nothing half-written stays
        raise CLIError(f"{_write_error(err, out)}; free some space or give --out another folder") from None
    return 0


def _write_error(err: OSError, out: Path) -> str:
    """What a failed report write says: the file (or folder) and why."""
    from features.atomic_io import DiskFullError

    if isinstance(err, DiskFullError):
        return str(err)
    return f"cannot write {err.filename or out}: {err.strerror or err}"
