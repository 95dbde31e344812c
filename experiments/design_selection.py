"""Choosing a refinement design without target labels, over the feature benchmark's geometries.

A user adapting to an unlabelled target cannot pick a design by target accuracy. This command
picks one the way such a user could, with a label-free validator (:mod:`experiments.validators`),
and shows what target labels would have picked (the oracle of selection) beside it:

1. every candidate design, and the two references (``adversarial-only``, ``ground-truth-removal``:
   the share of the bound each design recovers), is trained on every geometry of
   :mod:`experiments.feature_suite` and every **validation** seed, computing every validator at the
   full evaluations (``evaluation.validators``);
2. per validator, the chosen design is the candidate with the best mean validator value over
   geometries and seeds (each geometry weighs the same); ``adversarial-only`` (no refinement) is a
   candidate, ground-truth removal is not (it reads the planted labels);
3. per geometry, each validator's Spearman rank correlation with target top-1 over the grid's runs
   (every candidate x seed a point) and over the candidates' means;
4. per geometry, each relevance signal's ``negative_auc`` (P(planted negative rated less relevant
   than a clean row)) from the ``diag/auc/SIGNAL`` statistics of the runs that log them.

It writes ``selection.md`` and ``selection.json``. Report the chosen design on the **test** seeds
with ``python -m experiments.feature_suite --methods adversarial-only,ground-truth-removal,...,DESIGN``:
the seeds that chose a design never measure it.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ConfigError, parse_overrides
from experiments.config_layers import add_set_option
from experiments.feature_benchmark import known_methods, parse_seeds
from experiments.feature_suite import BASELINE, BOUND, known_geometries, run_suite, signal_aucs, suite_config
from experiments.report import RunRecord, find_runs, run_validators, spearman
from features.atomic_io import atomic_write_text, json_text

EXAMPLES = """examples:
  # the candidates on validation seeds, every validator computed; then the chosen one on test seeds
  OMP_NUM_THREADS=1 python -m experiments.design_selection --out runs/design-selection --seeds 100-104 --jobs 2 \\
      --designs random-removal,mmir,mmir-robust,relevance-density
  python -m experiments.feature_suite --out runs/feature-suite --seeds 0-19 \\
      --methods adversarial-only,ground-truth-removal,random-removal,relevance-density
"""


def _validators() -> list[str]:
    from experiments.validators import VALIDATORS

    return list(VALIDATORS.names())


def geometry_records(out: Path, geometry: str, methods: Sequence[str], seeds: Sequence[int]) -> list[RunRecord]:
    """The finished runs of ``methods`` x ``seeds`` in ``out/<geometry>``."""
    wanted = {f"{m}-seed{s}" for m in methods for s in seeds}
    dirs = [p for p in sorted((out / geometry).glob("*-seed*")) if p.name in wanted]
    return find_runs(dirs) if dirs else []


def choose(records: dict[str, list[RunRecord]], candidates: Sequence[str], validator: str) -> dict[str, Any]:
    """``validator``'s choice among ``candidates`` (mean over seeds per geometry, then over geometries) and the oracle's.

    ``records``: geometry -> runs. A candidate missing the validator on some geometry is not chosen.
    """
    scores: dict[str, list[float]] = defaultdict(list)
    targets: dict[str, list[float]] = defaultdict(list)
    for runs in records.values():
        for design in candidates:
            group = [r for r in runs if r.method == design]
            values = [run_validators(r).get(validator, math.nan) for r in group]
            if group and all(math.isfinite(v) for v in values):
                scores[design].append(float(np.mean(values)))
            targets[design].append(float(np.mean([r.top1 for r in group])) if group else math.nan)
    complete = [d for d in candidates if len(scores[d]) == len(records)]
    pooled = {d: float(np.mean(scores[d])) for d in complete}
    accuracy = {d: float(np.mean(targets[d])) for d in candidates if all(math.isfinite(t) for t in targets[d])}
    chosen = max(complete, key=lambda d: pooled[d]) if complete else None
    oracle = max(accuracy, key=lambda d: accuracy[d]) if accuracy else None
    return {
        "validator": validator,
        "chosen": chosen,
        "oracle": oracle,
        "scores": pooled,
        "target_top1": accuracy,
        "regret": (accuracy[oracle] - accuracy[chosen]) if chosen in accuracy and oracle else math.nan,
    }


def correlations(runs: list[RunRecord], candidates: Sequence[str], validator: str) -> dict[str, float]:
    """Spearman between ``validator`` and target top-1 over the runs of ``candidates`` and over their means."""
    pairs = [
        (r.method, run_validators(r)[validator], r.top1)
        for r in runs
        if r.method in candidates and math.isfinite(run_validators(r).get(validator, math.nan))
    ]
    by_design: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for design, value, top1 in pairs:
        by_design[design].append((value, top1))
    means = [(float(np.mean([v for v, _ in xs])), float(np.mean([t for _, t in xs]))) for xs in by_design.values()]
    return {
        "runs": spearman([v for _, v, _ in pairs], [t for _, _, t in pairs]) if len(pairs) > 1 else math.nan,
        "designs": spearman([v for v, _ in means], [t for _, t in means]) if len(means) > 1 else math.nan,
        "n_runs": len(pairs),
        "n_designs": len(means),
    }


def gt_share(runs: Sequence[RunRecord], design: str) -> float:
    """``mean(design - adversarial-only) / mean(ground truth - adversarial-only)`` over the seeds the three share."""
    by = {(r.method, r.seed): r.top1 for r in runs}
    seeds = sorted(
        {s for (m, s) in by if m == design} & {s for (m, s) in by if m == BASELINE} & {s for (m, s) in by if m == BOUND}
    )
    if not seeds:
        return math.nan
    gain = np.mean([by[(BOUND, s)] - by[(BASELINE, s)] for s in seeds])
    got = np.mean([by[(design, s)] - by[(BASELINE, s)] for s in seeds])
    return float(got / gain) if gain > 0 else math.nan


def summarise(
    out: Path, geometries: Sequence[str], designs: Sequence[str], seeds: Sequence[int], validators: Sequence[str]
) -> dict[str, Any]:
    """Choices, correlations, validation shares and signal AUCs of the finished runs under ``out``."""
    candidates = [BASELINE, *[d for d in designs if d != BASELINE]]
    methods = [*candidates, BOUND]
    records = {g: geometry_records(out, g, methods, seeds) for g in geometries}
    return {
        "geometries": list(geometries),
        "candidates": candidates,
        "seeds": list(seeds),
        "choices": {v: choose(records, candidates, v) for v in validators},
        "correlations": {g: {v: correlations(records[g], candidates, v) for v in validators} for g in geometries},
        "validation_share": {g: {d: gt_share(records[g], d) for d in candidates} for g in geometries},
        "validation_top1": {
            g: {d: float(np.mean([r.top1 for r in records[g] if r.method == d] or [math.nan])) for d in methods}
            for g in geometries
        },
        "signal_aucs": {
            g: signal_aucs(r.metrics_path for r in records[g] if r.method in candidates) for g in geometries
        },
    }


def _f(x: float, fmt: str = "{:+.2f}") -> str:
    return "-" if x is None or not math.isfinite(x) else fmt.format(x)


def markdown(summary: dict[str, Any]) -> str:
    """The choices, the rank correlations per geometry, the validation shares and the signal AUCs as Markdown tables."""
    g = summary["geometries"]
    lines = [
        f"## Selection on validation seeds {summary['seeds'][0]}-{summary['seeds'][-1]} "
        f"({len(summary['seeds'])} seeds x {len(g)} geometries)",
        "",
        "| validator | chosen design | its target top-1 (%) | oracle (target labels) | its target top-1 (%) | regret (points) |",
        "|---|---|---:|---|---:|---:|",
    ]
    for v, c in summary["choices"].items():
        acc = c["target_top1"]
        lines.append(
            f"| {v} | {c['chosen'] or '-'} | {_f(100 * acc.get(c['chosen'], math.nan), '{:.1f}')} | {c['oracle'] or '-'} "
            f"| {_f(100 * acc.get(c['oracle'], math.nan), '{:.1f}')} | {_f(100 * c['regret'], '{:.1f}')} |"
        )
    lines += ["", "### Spearman between each validator and target top-1, per geometry (over runs / over designs)", ""]
    lines += ["| validator | " + " | ".join(g) + " |", "|---|" + "---:|" * len(g)]
    for v in summary["choices"]:
        cells = [
            f"{_f(summary['correlations'][geo][v]['runs'])} / {_f(summary['correlations'][geo][v]['designs'])}"
            for geo in g
        ]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "### Share of the ground-truth gain on the validation seeds", ""]
    lines += ["| design | " + " | ".join(g) + " |", "|---|" + "---:|" * len(g)]
    for d in summary["candidates"]:
        cells = [_f(100 * summary["validation_share"][geo][d], "{:.0f}%") for geo in g]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    signals = sorted({s for geo in g for dom in summary["signal_aucs"][geo].values() for s in dom})
    if signals:
        lines += [
            "",
            "### negative_auc of each relevance signal (0.5: blind; 1: every negative below every clean row)",
            "",
        ]
        for dom in ("source", "target"):
            lines += [f"{dom} rows:", "", "| signal | " + " | ".join(g) + " |", "|---|" + "---:|" * len(g)]
            for s in signals:
                cells = [_f(summary["signal_aucs"][geo].get(dom, {}).get(s, math.nan), "{:.2f}") for geo in g]
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.design_selection",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--designs", required=True, help="comma-separated candidate presets of experiments/configs/feature-benchmark"
    )
    p.add_argument(
        "--geometries", default=",".join(known_geometries()), help="comma-separated geometries (default: all)"
    )
    p.add_argument(
        "--seeds", default="100-104", help="validation seeds (default: %(default)s; never the test seeds 0-19)"
    )
    p.add_argument("--validators", default=None, help="comma-separated validators (default: every registered one)")
    p.add_argument("--out", type=Path, default=Path("runs/design-selection"), help="run folders and tables")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes of one torch thread (default: %(default)s)")
    add_set_option(p, "override every run's config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    geometries = [g.strip() for g in args.geometries.split(",") if g.strip()]
    validators = (
        _validators() if args.validators is None else [v.strip() for v in args.validators.split(",") if v.strip()]
    )
    if bad := [d for d in designs if d not in known_methods()]:
        parser.error(f"--designs: unknown preset {bad}; presets: {', '.join(known_methods())}")
    if BOUND in designs:
        parser.error(f"--designs: {BOUND} reads the planted labels and cannot be a label-free choice")
    if bad := [g for g in geometries if g not in known_geometries()]:
        parser.error(f"--geometries: unknown {bad}; known: {', '.join(known_geometries())}")
    if bad := [v for v in validators if v not in _validators()]:
        parser.error(f"--validators: unknown {bad}; known: {', '.join(_validators())}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        seeds = parse_seeds(args.seeds)
        overrides = {**parse_overrides(args.overrides), "evaluation.validators": validators}
        for g in geometries:
            for m in (BASELINE, BOUND, *designs):
                suite_config(m, g, seeds[0], args.out, overrides)
    except (ValueError, ConfigError) as err:
        parser.error(str(err).splitlines()[0])
    if any(0 <= s <= 19 for s in seeds):
        print(
            "warning: seeds 0-19 are the suite's test seeds; choosing on them reports the choice on the seeds that made it"
        )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    methods = [BASELINE, BOUND, *[d for d in designs if d != BASELINE]]
    run_suite(args.out, geometries, methods, seeds, args.jobs, overrides)
    summary = summarise(args.out, geometries, designs, seeds, validators)
    text = (
        markdown(summary)
        + f"\n{len(methods) * len(geometries) * len(seeds)} runs, {time.perf_counter() - start:.0f} s wall\n"
    )
    print(text)
    atomic_write_text(args.out / "selection.md", text)
    atomic_write_text(args.out / "selection.json", json_text({**summary, "overrides": overrides}, indent=1))
    print(f"tables: {args.out / 'selection.md'}; statistics: {args.out / 'selection.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
