"""The refinement diagnostics of finished runs: one table row per method, curves over stage 2.

Reads the ``diag/NAME/modality/domain`` values every co-training step with refinement writes to
``metrics.jsonl`` (:mod:`experiments.refiners.diagnostics`), averages them over stage 2, over the
agents and over seeds, and sets each beside its chance level. Precision gets a paired 95%
bootstrap interval of (precision - chance) over seeds: an agent that finds planted negatives has
an interval above 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# name in metrics.jsonl -> column title; the order of the table
COLUMNS: dict[str, str] = {
    "disc_auc": "D AUC",
    "relevance_auc": "rel. AUC",
    "spread": "spread",
    "uniform_reward": "same reward",
    "agreement": "agreement",
    "greedy_reward": "greedy r",
    "random_reward": "random r",
    "precision": "precision",
    "recall": "recall",
    "negative_auc": "neg. AUC",
    "staleness": "stale",
}
CHANCE = {"agreement": "agreement_chance", "precision": "precision_chance", "recall": "recall_chance"}


def run_diagnostics(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Stage-2 mean of every diagnostic of one run, averaged over its agents (absent or NaN values skipped)."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        if row.get("stage") != 2:
            continue
        for key, value in row.items():
            if key.startswith("diag/") and isinstance(value, (int, float)) and math.isfinite(value):
                parts = key.split("/")
                name = f"auc/{parts[2]}" if parts[1] == "auc" else parts[1]  # diag/auc/SIGNAL/...: one per signal
                sums.setdefault(name, []).append(float(value))
    return {name: float(np.mean(values)) for name, values in sums.items()}


def _rows(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_run_diagnostics(run: Path) -> dict[str, float]:
    """:func:`run_diagnostics` of ``run/metrics.jsonl`` ({} when the run has none)."""
    return run_diagnostics(_rows(run))


@dataclass(frozen=True)
class MethodDiagnostics:
    """One method's diagnostics over its seeds."""

    method: str
    pair: str
    seeds: int
    means: dict[str, float]
    precision_excess: tuple[float, float, float] | None  # mean, low, high of precision - chance over seeds

    def cell(self, name: str) -> str:
        if name not in self.means:
            return "-"
        text = f"{self.means[name]:.3f}"
        chance = CHANCE.get(name)
        if chance and chance in self.means:
            text += f" ({self.means[chance]:.2f})"
        return text


def method_diagnostics(records: list[Any]) -> list[MethodDiagnostics]:
    """Per (method, pair) of ``records`` (:class:`experiments.report.RunRecord`) that logged diagnostics."""
    from experiments.report import bootstrap_interval

    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for record in records:
        diag = read_run_diagnostics(record.path)
        if diag:
            groups.setdefault(
                (
                    record.method,
                    f"{record.pair} [{variant}]" if (variant := getattr(record, "variant", "")) else record.pair,
                ),
                [],
            ).append(diag)
    out = []
    for (method, pair), runs in groups.items():
        names = sorted({k for run in runs for k in run})
        means = {k: float(np.mean([run[k] for run in runs if k in run])) for k in names}
        excess = None
        paired = [
            run["precision"] - run["precision_chance"]
            for run in runs
            if "precision" in run and "precision_chance" in run
        ]
        if paired:
            low, high = bootstrap_interval(np.array(paired))
            excess = (float(np.mean(paired)), low, high)
        out.append(MethodDiagnostics(method, pair, len(runs), means, excess))
    return out


# the terminal's table: what fits 80 columns (report.md has every column)
TERMINAL_COLUMNS = ("agreement", "precision", "disc_auc", "negative_auc", "staleness")


def _excess(r: MethodDiagnostics, digits: int = 3) -> str:
    if r.precision_excess is None:
        return "-"
    sep = ", " if digits > 2 else ","
    return "{:+.{d}f} [{:+.{d}f}{sep}{:+.{d}f}]".format(*r.precision_excess, d=digits, sep=sep)


def diagnostics_table(rows: list[MethodDiagnostics], style: str = "rich") -> Any:
    """The table: one row per method and pair; chance levels in brackets; precision - chance with its interval."""
    title = (
        "Refinement diagnostics, stage-2 mean over agents and seeds (chance in brackets): D AUC = GRL discriminator, "
        "rel. AUC = the rewards' relevance model, source vs target; agreement = greedy choice is the least relevant row; "
        "precision/recall against planted negatives; neg. AUC = negatives rated less relevant; stale = replayed "
        "rewards whose sign the current relevance model flips; AUC SIGNAL = neg. AUC of that relevance signal"
    )
    if style == "markdown":
        names = [n for n in COLUMNS if any(n in r.means for r in rows)]
        signals = sorted({n for r in rows for n in r.means if n.startswith("auc/")})  # refinement.signal_aucs
        titles = [COLUMNS[n] for n in names] + [f"AUC {n[4:]}" for n in signals]
        names += signals
        header = ["method", "pair", "seeds", *titles, "precision - chance [95%]"]
        body = [[r.method, r.pair, str(r.seeds), *[r.cell(n) for n in names], _excess(r)] for r in rows]
        lines = [
            "### Refinement diagnostics",
            "",
            title,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---", "---", "---:"] + ["---:"] * (len(header) - 3)) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"
    from rich import box
    from rich.table import Table as RichTable

    pairs = sorted({r.pair for r in rows})
    names = [n for n in TERMINAL_COLUMNS if any(n in r.means for r in rows)]
    table = RichTable(
        title="Refinement diagnostics"
        + (f", {pairs[0]}" if len(pairs) == 1 else "")
        + " (value/chance); all columns in report.md",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0),
    )
    table.add_column("method", no_wrap=True, max_width=22)
    if len(pairs) > 1:
        table.add_column("pair", no_wrap=True)
    for n in names:
        table.add_column(
            {
                "agreement": "agree",
                "precision": "prec",
                "disc_auc": "D AUC",
                "negative_auc": "negAUC",
                "staleness": "stale",
            }[n],
            justify="right",
            no_wrap=True,
        )
    table.add_column("prec-chance [95%]", justify="right", no_wrap=True)
    for r in rows:
        cells = [
            (
                "-"
                if n not in r.means
                else f"{r.means[n]:.2f}" + (f"/{r.means[CHANCE[n]]:.2f}" if CHANCE.get(n) in r.means else "")
            )
            for n in names
        ]
        table.add_row(r.method, *([r.pair] if len(pairs) > 1 else []), *cells, _excess(r, 2))
    return table


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def write_diagnostics_plot(records: list[Any], out: Path) -> Path | None:
    """``diagnostics.png``: agreement, precision, discriminator AUC and staleness over stage 2, one line per method."""
    import matplotlib

    from experiments.report import smooth

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("agreement", "greedy agreement with argmin relevance"),
        ("precision", "precision against planted negatives"),
        ("disc_auc", "GRL discriminator AUC, source vs target"),
        ("staleness", "replayed rewards gone stale"),
    ]
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    steps: dict[str, np.ndarray] = {}
    for record in records:
        # the steps that took diagnostics (refinement.diagnostics_every)
        rows = [r for r in _rows(record.path) if r.get("stage") == 2 and any(k.startswith("diag/") for k in r)]
        steps.setdefault(record.method, np.array([r["step"] for r in rows]))
        for name, _ in panels:
            series = np.array([_nanmean([v for k, v in r.items() if k.startswith(f"diag/{name}/")]) for r in rows])
            if rows and not np.all(np.isnan(series)):
                curves.setdefault(name, {}).setdefault(record.method, []).append(series)
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, title) in zip(axes[0], panels):
        for method, runs in curves.get(name, {}).items():
            n = min(len(s) for s in runs)
            stacked = np.stack([s[:n] for s in runs])
            mean = np.array([_nanmean(list(column)) for column in stacked.T])
            window = max(1, min(10, n // 10))
            smoothed = smooth(mean, window)
            ax.plot(steps[method][:n][len(mean) - len(smoothed) :], smoothed, label=method)
        ax.set(title=title, xlabel="stage-2 step (moving average)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "diagnostics.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
