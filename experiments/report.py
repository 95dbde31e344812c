"""Collect finished runs into the paper's tables (Tables 1-3) as rich, Markdown and CSV, and plot what happened.

A run is a folder holding ``config.json`` and ``summary.json`` (what ``mmir train`` and ``mmir
sweep`` write). Cells are the mean (± standard deviation over seeds) of each run's reported
target top-1: the mean of its last evaluations (paper 4.2). Table 1 lists methods, Table 2 the
agent ablations, Table 3 adversarial alignment with and without instance refinement; rows follow
:data:`experiments.methods.METHODS`, columns are domain pairs plus their mean, and the best cell of
each column is bold.

A cell pools seeds of one setting only (:func:`group_runs`): runs of a method whose resolved configs
differ in more than where and how they ran (a step budget, a learning rate, ...) become rows of
their own named by what differs (``MMIR [stage2.steps=300]``), and a second run of the same
setting and seed is counted once, with the reason among the skipped runs.

Label-free model selection (docs/validators.md): a run evaluated with ``evaluation.validators``
records ``val/NAME`` beside its target top-1; :func:`select_designs` ranks the designs of each pair
by a validator, beside the design target accuracy would pick (the oracle), and
:func:`validator_correlations` gives each validator's Spearman rank correlation with target
accuracy over the runs (``mmir report --rank-by NAME``, ``mmir sweep --select-by NAME``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ConfigError, RunConfig, from_dict, migrate_legacy
from experiments.methods import METHODS
from experiments.validators import METRIC_PREFIX
from features.atomic_io import atomic_path

TABLE_TITLES = {
    1: "Table 1: target top-1 (%) per domain pair",
    2: "Table 2: ablation of the agents, target top-1 (%)",
    3: "Table 3: adversarial alignment with and without instance refinement (IR), target top-1 (%)",
}


@dataclass
class RunRecord:
    """One finished run."""

    path: Path
    method: str
    pair: str
    seed: int
    top1: float
    mean_class_accuracy: float
    evaluations: list[dict[str, Any]]
    config: dict[str, Any] = field(repr=False)
    # the settings that set this run's row apart from other runs of its method ("stage2.steps=300"); "" for most
    variant: str = ""
    # how many of the last evaluations top1 averages (summary.json's evaluations_averaged; 0: all of them)
    averaged: int = 0
    # label-free validators' values, NAME -> mean of val/NAME over those evaluations (run_validators fills it)
    validators: dict[str, float] | None = field(default=None, repr=False)

    @property
    def row(self) -> str:
        """Its row in the tables: the method, and the settings that tell its runs apart when they differ."""
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def stats_path(self) -> Path:
        return self.path / "refinement_stats.json"


def find_runs(paths: list[Path], skipped: list[str] | None = None) -> list[RunRecord]:
    """Every finished run at or below ``paths`` (folders with config.json and summary.json); stage-1 folders are skipped.

    ``skipped``: collect a one-line reason per unreadable run there and go on (else the first one raises ValueError).
    """
    found: dict[Path, RunRecord] = {}
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(f"no run folder at {root}")
        candidates = (
            [root] if (root / "summary.json").is_file() else sorted(p.parent for p in root.rglob("summary.json"))
        )
        for run in candidates:
            if "_stage1" in run.parts or not (run / "config.json").is_file():
                continue
            try:
                record = _load_run(run)
            except ValueError as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
                continue
            if record is not None:
                found[run.resolve()] = record
    return group_runs(list(found.values()), skipped)


# Where and how a run ran, not what it trained: runs that differ only in these are one setting.
NOT_SETTINGS = (
    "name",
    "output_dir",
    "method",
    "seed",
    "device",
    "threads",
    "data.num_workers",
    "checkpoints.every",
    "checkpoints.replay",
    "snapshots.every",
    "snapshots.enabled",
    "snapshots.dtype",
    "refinement.diagnostics",
    "distributed.backend",
    # what an evaluation also measures without changing training (docs/validators.md)
    "evaluation.validators",
    "evaluation.validator_rows",
)


def run_settings(config: dict[str, Any]) -> dict[str, str]:
    """A stored config's settings as ``{dotted key: JSON value}``, keys added since at their defaults, without
    :data:`NOT_SETTINGS`."""
    try:
        config = from_dict(RunConfig, migrate_legacy(config)).to_dict()
    except (ConfigError, TypeError, ValueError):
        pass  # a config of another version: compared as it is
    flat: dict[str, str] = {}
    for key, value in config.items():
        items = value.items() if isinstance(value, dict) and key != "plugins" else [("", value)]
        for sub, v in items:
            dotted = f"{key}.{sub}" if sub else key
            if dotted not in NOT_SETTINGS:
                flat[dotted] = json.dumps(v, sort_keys=True)
    return flat


def group_runs(records: list[RunRecord], skipped: list[str] | None = None) -> list[RunRecord]:
    """The runs with their :attr:`RunRecord.variant` set, a second run of one setting and seed left out.

    Runs of one method on one pair whose :func:`run_settings` differ are not pooled: every key that
    tells such runs apart (a step budget, say) names the row of every run, so that the methods of
    one budget still sit side by side. A second run of the same method, pair, settings and seed is
    left out with a one-line reason in ``skipped`` (a warning when no list is given).
    """
    records = sorted(records, key=lambda r: str(r.path))
    settings = [run_settings(r.config) for r in records]
    cells: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r, s in zip(records, settings):
        cells[(r.method, r.pair)].append(s)
    split = sorted(
        {key for group in cells.values() for key in set().union(*group) if len({s.get(key) for s in group}) > 1}
    )
    kept: list[RunRecord] = []
    first: dict[tuple[str, str, str, int], RunRecord] = {}
    for r, s in zip(records, settings):
        r.variant = ", ".join(f"{key}={_plain(s.get(key))}" for key in split)
        key = (r.method, r.pair, r.variant, r.seed)
        if key in first:
            reason = (
                f"{r.path}: a second run of {r.method} on {r.pair} with seed {r.seed} and the settings of "
                f"{first[key].path}; counted once"
            )
            if skipped is None:
                warnings.warn(reason, RuntimeWarning, stacklevel=2)
            else:
                skipped.append(reason)
            continue
        first[key] = r
        kept.append(r)
    return kept


def _plain(value: str | None) -> str:
    """A JSON value as a label shows it: strings without quotes."""
    if value is None:
        return "-"
    parsed = json.loads(value)
    return parsed if isinstance(parsed, str) else value


def _load_run(run: Path) -> RunRecord | None:
    try:
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise ValueError(f"{run}: unreadable run files ({err})") from err
    if config.get("stage2", {}).get("steps", 0) == 0 or not summary.get("evaluations"):
        return None  # a stage-1-only run has nothing to report
    method = config.get("method") or "custom"
    if method == "custom":
        method = config.get("name", run.name)
    data = config.get("data", {})
    pair = f"{data.get('source', '?')}→{data.get('target', '?')}"
    if METHODS.get(method) is not None and METHODS[method].source_is_target:
        pair = f"→{data.get('target', '?')}"  # the upper bound belongs to every pair with this target
    try:
        return RunRecord(
            run,
            method,
            pair,
            int(config.get("seed", 0)),
            float(summary["top1_last"]),
            float(summary["mean_class_accuracy_last"]),
            summary["evaluations"],
            config,
            averaged=_count(summary.get("evaluations_averaged")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{run}: summary.json lacks a usable {err} value") from None


def _count(value: Any) -> int:
    """A non-negative count from a summary field (0 when missing or not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class Cell:
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if len(self.values) > 1:
            return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"
        return f"{100 * self.mean:.1f}"


@dataclass
class Table:
    number: int
    title: str
    pairs: list[str]
    rows: list[str]  # row names: the method, with its settings when its runs differ (RunRecord.row)
    cells: dict[tuple[str, str], Cell]  # (row, pair) -> cell; pair "mean" for the mean column
    methods: dict[str, str] = field(default_factory=dict)  # row -> method, where they differ

    def method(self, row: str) -> str:
        return self.methods.get(row, row)

    def row_title(self, row: str) -> str:
        """The row as shown: the method's title, then the settings that set the row apart."""
        method = self.method(row)
        return _title(method) + row[len(method) :]

    def best(self, column: str) -> float:
        means = [c.mean for (m, p), c in self.cells.items() if p == column]
        return max(means) if means else math.nan


def _pairs_of(records: list[RunRecord]) -> list[str]:
    pairs = sorted({r.pair for r in records if not r.pair.startswith("→")})
    return pairs or sorted({r.pair for r in records})


def build_tables(records: list[RunRecord], metric: str = "top1") -> list[Table]:
    """Tables 1-3 from the runs (a table with no row is left out)."""
    by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    pairs = _pairs_of(records)
    for r in records:
        value = r.top1 if metric == "top1" else r.mean_class_accuracy
        targets = [p for p in pairs if p.endswith(r.pair)] if r.pair.startswith("→") else [r.pair]
        for p in targets:
            by_cell[(r.row, p)].append(value)
    method_of = {r.row: r.method for r in records}
    present = {r.method for r in records}
    methods = [m for m in METHODS if m in present] + sorted(present - set(METHODS))
    order = [row for m in methods for row in sorted(row for row, of in method_of.items() if of == m)]
    tables = []
    for number in (1, 2, 3):
        rows = [
            row for row in order if number in (METHODS[method_of[row]].tables if method_of[row] in METHODS else (1,))
        ]
        if number == 2 and rows:
            rows = [row for row in order if method_of[row] == "mmir"] + [r for r in rows if method_of[r] != "mmir"]
        if not rows or (number in (2, 3) and len({method_of[row] for row in rows}) < 2):
            continue
        cells: dict[tuple[str, str], Cell] = {}
        for m in rows:
            for p in pairs:
                if by_cell.get((m, p)):
                    cells[(m, p)] = Cell(tuple(by_cell[(m, p)]))
            per_pair = [cells[(m, p)].mean for p in pairs if (m, p) in cells]
            if len(per_pair) == len(pairs):
                cells[(m, "mean")] = Cell((float(np.mean(per_pair)),))
        variants = {row: method_of[row] for row in rows if row != method_of[row]}
        tables.append(Table(number, TABLE_TITLES[number], pairs, rows, cells, variants))
    return tables


def caption_text(tables: list[Table], records: list[RunRecord], what: str = "target top-1") -> str:
    """The tables' caption: what a cell is, and over how many seeds its runs go (per cell, not pooled)."""
    counts = sorted({len(c.values) for t in tables for (_, p), c in t.cells.items() if p != "mean"})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}" if counts else "0"
    split = (
        " runs of a method with other settings are rows of their own [named by the settings];"
        if any(r.variant for r in records)
        else ""
    )
    return (
        f"{what} (%): mean of each run's last evaluations (paper 4.2), averaged over {seeds} seed(s) per cell "
        f"(± std over seeds);{split} {len(records)} runs"
    )


def _title(method: str) -> str:
    return METHODS[method].title if method in METHODS else method


def _header(table: Table) -> list[str]:
    extra = ["adversarial", "IR"] if table.number == 3 else []
    return ["method", *extra, *table.pairs, "mean"]


def _row_cells(table: Table, row: str, bold: tuple[str, str]) -> list[str]:
    out = [table.row_title(row)]
    if table.number == 3:
        m = METHODS.get(table.method(row))
        out += ["✓" if m and m.adversarial else "", "✓" if m and m.refinement else ""]
    for column in [*table.pairs, "mean"]:
        cell = table.cells.get((row, column))
        if cell is None:
            out.append("-")
            continue
        text = cell.text()
        is_best = len(table.rows) > 1 and cell.mean == table.best(column)
        out.append(f"{bold[0]}{text}{bold[1]}" if is_best else text)
    return out


def rich_tables(tables: list[Table], caption: str = "") -> list[Any]:
    from rich.table import Table as RichTable

    out = []
    for t in tables:
        rt = RichTable(title=t.title, caption=caption or None)
        for i, col in enumerate(_header(t)):
            rt.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for m in t.rows:
            rt.add_row(*_row_cells(t, m, ("[bold]", "[/bold]")))
        out.append(rt)
    return out


def markdown(tables: list[Table], caption: str = "") -> str:
    lines: list[str] = []
    for t in tables:
        header = _header(t)
        lines += [
            f"### {t.title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(_row_cells(t, m, ("**", "**"))) + " |" for m in t.rows]
        if caption:
            lines += ["", caption]
        lines.append("")
    return "\n".join(lines)


def csv_text(tables: list[Table], records: list[RunRecord]) -> str:
    """Long format: one line per (table, method, pair) with mean, std, n and the per-seed values."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["table", "method", "pair", "mean_top1", "std_top1", "n", "values"])
    for t in tables:
        for (m, p), cell in sorted(t.cells.items()):
            writer.writerow(
                [
                    t.number,
                    m,
                    p,
                    f"{cell.mean:.6f}",
                    f"{cell.std:.6f}",
                    len(cell.values),
                    " ".join(f"{v:.6f}" for v in cell.values),
                ]
            )
    writer.writerow([])
    writer.writerow(["run", "method", "pair", "seed", "top1_last", "mean_class_accuracy_last", "settings"])
    for r in sorted(records, key=lambda r: (r.pair, r.method, r.variant, r.seed)):
        writer.writerow(
            [str(r.path), r.method, r.pair, r.seed, f"{r.top1:.6f}", f"{r.mean_class_accuracy:.6f}", r.variant]
        )
    return buf.getvalue()


# -- paired differences ----------------------------------------------------------------------------
# (method, control): the differences every refinement table needs, where both were run
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("adversarial-only-clean", "adversarial-only"),  # negative transfer: the planted negatives cost alignment
    ("ground-truth-removal", "adversarial-only"),  # the bound: removing exactly them
    ("mmir", "adversarial-only"),
    ("mmir", "random-removal"),  # the control at the agents' removal rate
    ("mmir", "mmir-learn-only"),
    ("mmir-learn-only", "adversarial-only"),
    ("random-removal", "adversarial-only"),
    ("adversarial-only", "source-only"),
    ("adversarial-only-clean", "source-only-clean"),
    # the refinement designs, each against the same two controls
    *(
        (design, control)
        for design in ("mmir-critic", "mmir-relabel", "mmir-warmup", "mmir-rank", "mmir-margin", "mmir-robust")
        for control in ("adversarial-only", "random-removal")
    ),
    ("mmir-robust", "mmir"),
)


@dataclass(frozen=True)
class PairedDifference:
    """``method - control`` in target top-1 over the seeds both were run with, and its 95% bootstrap interval."""

    method: str
    control: str
    pair: str
    differences: tuple[float, ...]
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences))

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def bootstrap_interval(
    differences: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (seeded: the same numbers give the same interval)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired differences to bootstrap")
    if d.size == 1:
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (resamples, d.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_differences(
    records: list[RunRecord], comparisons: tuple[tuple[str, str], ...] = COMPARISONS, metric: str = "top1"
) -> list[PairedDifference]:
    """``method - control`` per domain pair, paired by seed, for every comparison whose two methods share >= 2 seeds.

    Runs are paired within one setting (:attr:`RunRecord.variant`); its settings then follow the pair's name.
    """
    value: dict[tuple[str, str, int], float] = {}
    for r in records:
        value[(r.method, _cell_pair(r), r.seed)] = r.top1 if metric == "top1" else r.mean_class_accuracy
    out = []
    for method, control in comparisons:
        for pair in sorted({p for _, p, _ in value}):
            seeds = sorted(s for (m, p, s) in value if m == method and p == pair and (control, pair, s) in value)
            if len(seeds) < 2:
                continue
            d = np.array([value[(method, pair, s)] - value[(control, pair, s)] for s in seeds])
            low, high = bootstrap_interval(d)
            out.append(PairedDifference(method, control, pair, tuple(float(x) for x in d), low, high))
    return out


def _cell_pair(record: RunRecord) -> str:
    """The pair a run is paired within: its domain pair, and its settings when runs of its method differ."""
    return f"{record.pair} [{record.variant}]" if record.variant else record.pair


def recovery_line(records: list[RunRecord], metric: str = "top1") -> str | None:
    """How much of the negative-transfer loss ground-truth removal recovers, per pair, where the three runs exist.

    loss = adversarial-only-clean - adversarial-only, gain = ground-truth-removal - adversarial-only
    (paired by seed); "at least half" holds when the interval of gain - loss / 2 lies above 0.
    """
    value = {
        (r.method, _cell_pair(r), r.seed): (r.top1 if metric == "top1" else r.mean_class_accuracy) for r in records
    }
    lines = []
    for pair in sorted({p for _, p, _ in value}):
        seeds = sorted(
            s
            for (m, p, s) in value
            if m == "adversarial-only"
            and p == pair
            and ("ground-truth-removal", p, s) in value
            and ("adversarial-only-clean", p, s) in value
        )
        if len(seeds) < 2:
            continue
        adv = np.array([value[("adversarial-only", pair, s)] for s in seeds])
        gain = np.array([value[("ground-truth-removal", pair, s)] for s in seeds]) - adv
        loss = np.array([value[("adversarial-only-clean", pair, s)] for s in seeds]) - adv
        low, high = bootstrap_interval(gain - 0.5 * loss)
        share = gain.mean() / loss.mean() if loss.mean() else math.nan
        verdict = "at least half (interval above 0)" if low > 0 else "not shown to be at least half"
        lines.append(
            f"{pair}: ground-truth removal recovers {100 * share:.0f}% of the loss of the planted negatives "
            f"({100 * gain.mean():+.1f} of {100 * loss.mean():+.1f} points); gain - loss/2 = {100 * (gain - 0.5 * loss).mean():+.1f} "
            f"[{100 * low:+.1f}, {100 * high:+.1f}] over {len(seeds)} seeds: {verdict}"
        )
    return "\n".join(lines) or None


def differences_table(diffs: list[PairedDifference], style: str = "rich", what: str = "target top-1") -> Any:
    """Paired differences in percentage points: mean [95% interval] (n seeds) per comparison and pair."""
    pairs = list(dict.fromkeys(d.pair for d in diffs))
    rows = list(dict.fromkeys((d.method, d.control) for d in diffs))
    cell = {(d.method, d.control, d.pair): d for d in diffs}
    header = ["difference (points)", *pairs]
    body = []
    for method, control in rows:
        line = [f"{_title(method)} − {_title(control)}"]
        for pair in pairs:
            d = cell.get((method, control, pair))
            line.append("-" if d is None else f"{d.text()} (n={d.n})" + (" *" if d.excludes_zero else ""))
        body.append(line)
    title = f"Paired differences of {what} (points): mean over seeds [95% bootstrap interval]; * interval excludes 0"
    if style == "markdown":
        lines = [
            f"### {title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * len(pairs)) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"
    from rich.table import Table as RichTable

    table = RichTable(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in body:
        table.add_row(*row)
    return table


# -- label-free validators ------------------------------------------------------------------------
def run_validators(record: RunRecord) -> dict[str, float]:
    """The run's label-free validator values: NAME -> mean of ``val/NAME`` over the evaluations its top-1 averages.

    Read from summary.json's evaluations, or, when they hold none, from the stage-2 rows of
    metrics.jsonl (``eval/val/NAME``). Non-finite values are left out of the mean; a validator
    without any value is absent. Cached on the record.
    """
    if record.validators is None:
        evaluations, prefix = record.evaluations, METRIC_PREFIX
        if not any(_prefixed(e, prefix) for e in evaluations):
            try:
                logged = _metrics(record)
            except (OSError, ValueError):  # a damaged metrics.jsonl: no values, as a run without validators
                logged = []
            evaluations = [x for x in logged if x.get("stage") == 2 and "eval/top1" in x]
            prefix = "eval/" + METRIC_PREFIX
        last = evaluations[-record.averaged :] if record.averaged else evaluations
        values: dict[str, list[float]] = defaultdict(list)
        for evaluation in last:
            for name, value in _prefixed(evaluation, prefix).items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values[name].append(float(value))
        record.validators = {name: float(np.mean(v)) for name, v in sorted(values.items())}
    return record.validators


def _prefixed(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix) :]: value for key, value in record.items() if key.startswith(prefix)}


def average_ranks(values: Any) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span ([5, 7, 7, 9] -> [1, 2.5, 2.5, 4])."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return x
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]  # mean of ranks starts+1 .. ends
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties handled); NaN when n < 2 or either is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.shape != ry.shape:
        raise ValueError(f"spearman needs two samples of one size, got {rx.size} and {ry.size}")
    if rx.size < 2:
        return math.nan
    dx, dy = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / norm) if norm > 0 else math.nan


def _target(record: RunRecord, metric: str) -> float:
    return record.top1 if metric == "top1" else record.mean_class_accuracy


@dataclass(frozen=True)
class DesignScore:
    """One design (a row of the tables: a method and its settings) on one pair, mean over its seeds."""

    row: str
    method: str
    score: float  # the validator's value
    target: float  # target accuracy (what the oracle selects by)
    seeds: int

    @property
    def title(self) -> str:
        return _title(self.method) + self.row[len(self.method) :]


@dataclass(frozen=True)
class Selection:
    """Model selection on one pair: the designs ranked by a validator, beside what target accuracy (the oracle) would pick."""

    pair: str
    validator: str
    designs: tuple[DesignScore, ...]  # best validator value first
    spearman: float  # over the runs (each seed a point): validator value vs target accuracy
    runs: int

    @property
    def chosen(self) -> DesignScore:
        return self.designs[0]

    @property
    def oracle(self) -> DesignScore:
        return max(self.designs, key=lambda d: d.target)  # the first of equals in validator order

    @property
    def regret(self) -> float:
        """How much target accuracy choosing by the validator loses against the oracle (0: it chose as well)."""
        return self.oracle.target - self.chosen.target

    def text(self, what: str = "target top-1") -> str:
        chosen, oracle = self.chosen, self.oracle
        rho = "-" if math.isnan(self.spearman) else f"{self.spearman:+.2f}"
        return (
            f"{self.pair}: {self.validator} selects {chosen.title} ({what} {100 * chosen.target:.1f}); "
            f"the oracle ({what}) selects {oracle.title} ({100 * oracle.target:.1f}); regret "
            f"{100 * self.regret:.1f} points; Spearman over {self.runs} runs {rho}"
        )


def select_designs(records: list[RunRecord], validator: str, metric: str = "top1") -> list[Selection]:
    """Per pair, the designs of ``records`` ranked by ``validator`` (mean over seeds, higher first) and the oracle's pick.

    Runs without the validator's value are left out (:func:`run_validators`); a pair with none is absent.
    """
    by_pair: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        if validator in run_validators(r):
            by_pair[r.pair].append(r)
    out = []
    for pair, runs in sorted(by_pair.items()):
        rows: dict[str, list[RunRecord]] = defaultdict(list)
        for r in runs:
            rows[r.row].append(r)
        designs = [
            DesignScore(
                row,
                group[0].method,
                float(np.mean([run_validators(r)[validator] for r in group])),
                float(np.mean([_target(r, metric) for r in group])),
                len(group),
            )
            for row, group in rows.items()
        ]
        designs.sort(key=lambda d: (-d.score, d.row))
        rho = spearman([run_validators(r)[validator] for r in runs], [_target(r, metric) for r in runs])
        out.append(Selection(pair, validator, tuple(designs), rho, len(runs)))
    return out


def validator_correlations(records: list[RunRecord], metric: str = "top1") -> dict[str, dict[str, tuple[float, int]]]:
    """validator -> pair -> (Spearman over that pair's runs between the validator and target accuracy, runs), for every validator the runs carry."""
    names = sorted({name for r in records for name in run_validators(r)})
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for name in names:
        out[name] = {s.pair: (s.spearman, s.runs) for s in select_designs(records, name, metric)}
    return out


def selection_table(selections: list[Selection], style: str = "rich", what: str = "target top-1") -> Any:
    """The designs of each pair ranked by the validator, with their target accuracy and the oracle's rank."""
    validator = selections[0].validator if selections else "?"
    header = ["pair", "rank", "design", METRIC_PREFIX + validator, f"{what} (%)", "oracle rank", "seeds"]
    body = []
    for s in selections:
        by_target = sorted(s.designs, key=lambda d: -d.target)
        for rank, d in enumerate(s.designs, 1):
            oracle_rank = 1 + sum(o.target > d.target for o in by_target)
            body.append(
                [s.pair, str(rank), d.title, f"{d.score:.4g}", f"{100 * d.target:.1f}", str(oracle_rank), str(d.seeds)]
            )
    title = f"Designs ranked by {validator} (higher is better; mean over seeds of each run's last evaluations)"
    return _simple_table(title, header, body, style, left=(0, 2))


def correlation_table(
    correlations: dict[str, dict[str, tuple[float, int]]], style: str = "rich", what: str = "target top-1"
) -> Any:
    """Spearman's rank correlation between each validator and target accuracy, per pair (over its runs), and their mean."""
    pairs = sorted({p for per in correlations.values() for p in per})
    mean_column = len(pairs) > 1
    header = ["validator", *pairs, *(["mean"] if mean_column else [])]
    body = []
    for name, per in correlations.items():
        line = [name]
        for pair in pairs:
            rho, n = per.get(pair, (math.nan, 0))
            line.append("-" if math.isnan(rho) else f"{rho:+.2f} (n={n})")
        if mean_column:
            finite = [rho for rho, _ in per.values() if not math.isnan(rho)]
            line.append(f"{np.mean(finite):+.2f}" if finite else "-")
        body.append(line)
    title = f"Spearman rank correlation of each validator with {what} over each pair's runs"
    return _simple_table(title, header, body, style, left=(0,))


def _simple_table(title: str, header: list[str], body: list[list[str]], style: str, left: tuple[int, ...]) -> Any:
    """A rich table, or Markdown text, whose columns ``left`` are left-aligned (text) and the others right-aligned."""
    if style == "markdown":
        lines = [
            f"### {title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"
    from rich.table import Table as RichTable

    table = RichTable(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i in left else "right", no_wrap=i in left)
    for row in body:
        table.add_row(*row)
    return table


# -- plots -----------------------------------------------------------------------------------------
def _metrics(record: RunRecord) -> list[dict[str, Any]]:
    if not record.metrics_path.is_file():
        return []
    return [json.loads(line) for line in record.metrics_path.read_text().splitlines() if line.strip()]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def write_plots(records: list[RunRecord], out: Path) -> list[Path]:
    """PNG plots of the runs (needs matplotlib: ``pip install mmir[plots]``); returns the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'mmir[plots]'") from err
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pairs = _pairs_of(records)
    methods = [m for m in METHODS if any(r.method == m for r in records)] + sorted(
        {r.method for r in records} - set(METHODS)
    )

    # 1. target accuracy per evaluation, mean over the seeds of one setting, one panel per pair
    rows = [(m, row) for m in methods for row in sorted({r.row for r in records if r.method == m})]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for m, row in rows:
            runs = [
                r
                for r in records
                if r.row == row and (r.pair == pair or (r.pair.startswith("→") and pair.endswith(r.pair)))
            ]
            if not runs:
                continue
            steps = [e["step"] for e in runs[0].evaluations]
            acc = np.array([[e["top1"] for e in r.evaluations] for r in runs if len(r.evaluations) == len(steps)])
            ax.plot(steps, 100 * acc.mean(0), label=_title(m) + row[len(m) :], marker=".")
        ax.set(title=f"Target top-1 per evaluation, {pair}", xlabel="stage-2 step", ylabel="target top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    written.append(_save(fig, out / "accuracy.png", plt))

    # 2. losses over stage 2 per method (first seed of each, first pair); only the terms some method has
    # the paper's terms first, then every other objective's term the runs logged (a plug-in's included)
    loss_titles = {"cls": "L_cls", "adv": "L_adv (eq. 8)", "dqn": "L_dqn (eq. 7)"}
    for m in methods:
        run = next((r for r in records if r.method == m and r.pair == pairs[0]), None)
        for key in _metrics(run)[-1] if run and _metrics(run) else {}:
            if "/" not in key and key not in ("stage", "step", "loss") and key not in loss_titles:
                loss_titles[key] = key
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for m in methods:
        run = next((r for r in records if r.method == m and r.pair == pairs[0]), None)
        rows = [x for x in _metrics(run) if x.get("stage") == 2] if run else []
        for key in loss_titles:
            if any(x.get(key) for x in rows):
                values = np.array([x.get(key, np.nan) for x in rows], dtype=float)
                steps = np.array([x["step"] for x in rows], dtype=float)
                window = max(1, min(10, len(rows) // 10))
                curves.setdefault(key, []).append(
                    (_title(m), steps[window - 1 :] if window > 1 else steps, smooth(values, window))
                )
    if curves:
        ncols = min(3, len(curves))
        nrows = math.ceil(len(curves) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
        for ax in axes.flat[len(curves) :]:
            ax.set_visible(False)
        for ax, (key, lines) in zip(axes.flat, curves.items()):
            for label, x, y in lines:
                ax.plot(x, y, label=label)
            ax.set(title=f"{loss_titles[key]}, {pairs[0]}", xlabel="stage-2 step (moving average)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        written.append(_save(fig, out / "losses.png", plt))

    # 3. agents' mean reward and removal rate over training (MMIR-family runs, first pair, seeds pooled)
    agent_runs = [
        r for r in records if r.pair == pairs[0] and any(k.startswith("reward/") for x in _metrics(r)[:50] for k in x)
    ]
    if agent_runs:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
        for r in agent_runs:
            rows = [x for x in _metrics(r) if x.get("stage") == 2]
            for key in sorted({k.split("/", 1)[1] for x in rows for k in x if k.startswith("reward/")}):
                reward = np.array([x.get(f"reward/{key}", np.nan) for x in rows], dtype=float)
                rate = np.array([x.get(f"removal_rate/{key}", np.nan) for x in rows], dtype=float)
                label = f"{_title(r.method)} s{r.seed} {key}"
                axes[0][0].plot(smooth(reward, 10), label=label, alpha=0.8)
                axes[0][1].plot(smooth(rate, 10), label=label, alpha=0.8)
        axes[0][0].set(
            title=f"Agents' mean reward (eq. 4), {pairs[0]}", xlabel="stage-2 step (smoothed)", ylabel="mean reward"
        )
        axes[0][1].set(
            title=f"Agents' removal rate, {pairs[0]}", xlabel="stage-2 step (smoothed)", ylabel="removed / seen"
        )
        axes[0][0].set_ylim(-1.05, 1.05)  # eq. 4 rewards are +-1
        axes[0][1].set_ylim(0.0, 1.0)  # a rate: a constant E / n_c stays a flat line, not an axis of 1e-3 ticks
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        axes[0][1].legend(fontsize=6, ncol=2)
        written.append(_save(fig, out / "agents.png", plt))

    # 4. relevance histograms of kept vs removed instances per domain; 5. per-class removal rates
    stats = [json.loads(r.stats_path.read_text()) for r in records if r.stats_path.is_file()]
    if stats:
        bins = stats[0]["bins"]
        edges = np.linspace(0, 1, bins + 1)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
        per_class: dict[str, np.ndarray] = {}
        for ax, domain in zip(axes[0], ("source", "target")):
            kept = np.zeros(bins)
            removed = np.zeros(bins)
            for s in stats:
                for key, entry in s["agents"].items():
                    if key.endswith("/" + domain):
                        kept += entry["kept_histogram"]
                        removed += entry["removed_histogram"]
                        seen = np.array(entry["seen_per_class"], dtype=float)
                        rem = np.array(entry["removed_per_class"], dtype=float)
                        acc = per_class.setdefault(key, np.zeros((2, len(seen))))
                        acc += np.stack([rem, seen])
            width = edges[1] - edges[0]
            ax.bar(
                edges[:-1],
                kept / max(1, kept.sum()),
                width=width,
                align="edge",
                alpha=0.6,
                label=f"kept ({int(kept.sum())})",
            )
            ax.bar(
                edges[:-1],
                removed / max(1, removed.sum()),
                width=width,
                align="edge",
                alpha=0.6,
                label=f"removed ({int(removed.sum())})",
            )
            ax.set(
                title=f"Relevance (eq. 3) of {domain} instances",
                xlabel="relevance to the other domain",
                ylabel="share of instances",
            )
            ax.legend()
        written.append(_save(fig, out / "relevance_histograms.png", plt))
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(next(iter(per_class.values()))[0])), 4))
        keys = sorted(per_class)
        n_classes = per_class[keys[0]].shape[1]
        width = 0.8 / len(keys)
        rates = {key: 100 * rem / np.maximum(seen, 1) for key, (rem, seen) in per_class.items()}
        for i, key in enumerate(keys):
            ax.bar(np.arange(n_classes) + i * width, rates[key], width=width, label=key)
        ax.set(
            title="Removal rate per class, per agent (all runs with agents)",
            xlabel="class",
            ylabel="removed / seen (%)",
            xticks=np.arange(n_classes) + 0.4 - width / 2,
            xticklabels=[str(c) for c in range(n_classes)],
        )
        ax.set_ylim(
            0, max(1.0, 1.35 * max(float(r.max()) for r in rates.values()))
        )  # head room, so that the legend covers no bar
        ax.legend(fontsize=7, ncol=len(keys), loc="upper center")
        written.append(_save(fig, out / "removal_per_class.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:  # the suffix tells matplotlib the format
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
