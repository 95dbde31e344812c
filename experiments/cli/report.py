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
  mmir report runs/sweep --rank-by snd            # designs ranked by a label-free validator, Spearman vs target
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
    p.add_argument(
        "--rank-by",
        default=None,
        metavar="VALIDATOR",
        help="rank each pair's designs by a label-free validator (the runs' val/VALIDATOR, e.g. snd, entropy, dev) "
        "beside the design target accuracy picks, and print every validator's Spearman correlation with it "
        "(docs/validators.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.cli.common import CLIError, check_output_folder
    from experiments.diagnostics_report import diagnostics_table, method_diagnostics, write_diagnostics_plot
    from experiments.report import (
        build_tables,
        caption_text,
        correlation_table,
        csv_text,
        differences_table,
        find_runs,
        markdown,
        paired_differences,
        recovery_line,
        rich_tables,
        selection_table,
        validator_correlations,
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
    selections = _rank_by(args.rank_by, records, args.runs, "top1" if metric == "top1" else "mean_class_accuracy")
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
    ranked = ""
    if selections is not None:
        correlations = validator_correlations(records, "top1" if metric == "top1" else "mean_class_accuracy")
        console.print(selection_table(selections, what=what))
        for selection in selections:
            console.print(selection.text(what), highlight=False)
        console.print(correlation_table(correlations, what=what))
        ranked = (
            "\n"
            + selection_table(selections, "markdown", what)
            + "\n"
            + "".join(f"{selection.text(what)}\n" for selection in selections)
            + "\n"
            + correlation_table(correlations, "markdown", what)
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "report.md",
            markdown(tables, caption)
            + ("\n" + differences_table(diffs, "markdown", what=what) if diffs else "")
            + (f"\n{recovered}\n" if recovered else "")
            + ("\n" + diagnostics_table(diagnostics, "markdown") if diagnostics else "")
            + ranked,
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


def _rank_by(name: str | None, records: list[Any], runs: list[Path], metric: str) -> list[Any] | None:
    """The selections ``--rank-by NAME`` prints (None without it); a one-line CLIError for a name no run can be ranked by.

    A name is known when it is a registered validator or some run carries its values (a plug-in's);
    runs without its values are left out with a warning.
    """
    if name is None:
        return None
    from experiments.cli.common import CLIError
    from experiments.report import run_validators, select_designs
    from experiments.validators import VALIDATORS, metric_name

    carried = {n for r in records for n in run_validators(r)}
    if name not in VALIDATORS and name not in carried:
        known = sorted(set(VALIDATORS.names()) | carried)
        raise CLIError(f"--rank-by {name!r} is not a known validator; choose one of {', '.join(known)}")
    if name not in carried:
        raise CLIError(
            f"--rank-by {name}: no run below {', '.join(map(str, runs))} recorded {metric_name(name)}; "
            f'train the runs with evaluation.validators = ["{name}"]'
        )
    for r in records:
        if name not in run_validators(r):
            print(
                f"mmir report: warning: {r.path} has no {metric_name(name)}; left out of the ranking", file=sys.stderr
            )
    return select_designs(records, name, metric)


def _write_error(err: OSError, out: Path) -> str:
    """What a failed report write says: the file (or folder) and why."""
    from features.atomic_io import DiskFullError

    if isinstance(err, DiskFullError):
        return str(err)
    return f"cannot write {err.filename or out}: {err.strerror or err}"
