"""The negative-transfer benchmark at feature level: methods x seeds (x contamination levels), paired intervals.

Every run is the preset ``experiments/configs/feature-benchmark/<method>.toml`` with ``seed`` (which
also seeds the generated data, :mod:`features.data.negative_transfer`) and the output folder
overridden, trained by :class:`~experiments.cotrain.CoTrainer` as ``mmir train`` does. The methods
of one seed that agree on everything stage 1 uses share one stage 1 (the first trains it, the others
start stage 2 from its ``stage1.pt``: the state a full run reaches); the clean variants have other
source rows, so they train their own. A run's ``seconds`` count the shared stage 1 once for each
method (what ``mmir train`` of the preset takes). Seeds run in parallel processes with one torch
thread each; finished runs (``summary.json`` with the same config) are reused, so an interrupted
benchmark continues.

The benchmark is valid only if negative transfer is real in it, so the script checks, with paired
95% bootstrap intervals over seeds of target top-1 (``top1_last``: the mean of the last evaluations):

1. ``adversarial-only-clean - adversarial-only`` > 0 (interval excludes 0): the planted negatives
   make adversarial alignment worse;
2. ``ground-truth-removal - adversarial-only`` > 0 (interval excludes 0) and its mean is at least
   half of (1): removing exactly the planted negatives from L_adv recovers at least half the loss.

Seeds: settings were chosen on the validation seeds 100-109 (``--seeds 100-109``); the reported
numbers are the test seeds 0-19 (the default).

Usage::

    OMP_NUM_THREADS=1 python -m experiments.feature_benchmark --out runs/feature-benchmark
    python -m experiments.feature_benchmark --seeds 100-109 --out runs/feature-benchmark-validation
    python -m experiments.feature_benchmark --contamination 0,0.1,0.2,0.3,0.4 --methods adversarial-only,ground-truth-removal,random-removal,mmir
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import CONFIG_DIR, RunConfig, load_config
from experiments.config_layers import add_set_option
from experiments.report import COMPARISONS as REPORT_COMPARISONS
from experiments.runs import finished_run
from features.atomic_io import atomic_write_text, json_text

PRESETS = CONFIG_DIR / "feature-benchmark"
#: The table's rows, in order; the first of each stage-1 group trains the shared stage 1.
METHODS: tuple[str, ...] = (
    "source-only",
    "adversarial-only",
    "mmir",
    "mmir-learn-only",
    "random-removal",
    "ground-truth-removal",
    "source-only-clean",
    "adversarial-only-clean",
)
TEST_SEEDS: tuple[int, ...] = tuple(range(20))
VALIDATION_SEEDS: tuple[int, ...] = tuple(range(100, 110))
#: (method, control): the paired differences printed and stored (the ones ``mmir report`` prints).
COMPARISONS = REPORT_COMPARISONS


def known_methods() -> list[str]:
    """The presets of ``experiments/configs/feature-benchmark`` (a new preset file is a new method)."""
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"100-109,120"`` or ``"3"`` -> seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        seeds.extend(range(int(low), int(high) + 1) if sep else [int(low)])
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def run_config(method: str, seed: int, out: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset of ``method`` with seed, the run folder ``out/<method>-seed<seed>`` and ``overrides``."""
    extra = {"seed": seed, "output_dir": str(out), "name": f"{method}-seed{seed}", **(overrides or {})}
    return load_config(PRESETS / f"{method}.toml", extra)


def stage1_view(cfg: RunConfig) -> str:
    """Everything stage 1 depends on (runs that agree on it may share one stage 1)."""
    d = cfg.to_dict()
    return json.dumps(
        {k: d[k] for k in ("seed", "data", "model", "stage1", "precision", "feature_benchmark", "device")},
        sort_keys=True,
    )


def refinement_precision(metrics_path: Path) -> dict[str, dict[str, float]]:
    """Per domain, over stage 2 and both modalities: rows removed, their share of planted negatives
    (precision) and the share of planted negatives removed (recall), from ``metrics.jsonl``."""
    sums: dict[str, dict[str, float]] = {}
    if not metrics_path.is_file():
        return {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") != 2:
            continue
        for key, value in record.items():
            for stat in ("removed", "negatives_removed", "negatives_present", "removal_rate"):
                if key.startswith(stat + "/"):
                    domain = key.rsplit("/", 1)[-1]
                    entry = sums.setdefault(domain, {})
                    entry[stat] = entry.get(stat, 0.0) + float(value)
    out = {}
    for domain, s in sorted(sums.items()):
        removed, hit, present = s.get("removed", 0.0), s.get("negatives_removed", 0.0), s.get("negatives_present", 0.0)
        out[domain] = {
            "removed": removed,
            "precision": hit / removed if removed else float("nan"),
            "recall": hit / present if present else float("nan"),
        }
    return out


def _train(cfg: RunConfig, stage1_from: tuple[Path, float, float] | None) -> dict[str, Any]:
    """One run (from a shared stage 1 when given: its checkpoint, wall and CPU seconds); summary plus timing."""
    from experiments.cotrain import CoTrainer

    done = finished_run(cfg, extra=("timing.json",))
    if done is not None:
        return done
    wall, cpu = time.perf_counter(), time.process_time()
    marks: dict[str, float] = {}

    def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
        if stage == 1 and step == cfg.stage1.steps:
            marks["wall"], marks["cpu"] = time.perf_counter() - wall, time.process_time() - cpu

    trainer = CoTrainer(cfg, on_step=on_step)
    if stage1_from is not None:
        trainer.start_stage2_from(stage1_from[0])
    summary = trainer.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if stage1_from is not None:
        timing = {
            "seconds": stage1_from[1] + wall,
            "cpu_seconds": stage1_from[2] + cpu,
            "stage1_seconds": stage1_from[1],
            "stage1_cpu_seconds": stage1_from[2],
            "stage1_shared": True,
        }
    else:
        timing = {
            "seconds": wall,
            "cpu_seconds": cpu,
            "stage1_seconds": marks.get("wall", 0.0),
            "stage1_cpu_seconds": marks.get("cpu", 0.0),
            "stage1_shared": False,
        }
    atomic_write_text(cfg.run_dir() / "timing.json", json_text(timing))
    return {**summary, **timing}


def run_seed(
    seed: int, methods: Sequence[str], out: Path, overrides: dict[str, Any] | None = None, threads: int = 1
) -> list[dict[str, Any]]:
    """Every method of one seed, sequentially, sharing stage 1 where the configs allow; one record per run."""
    import torch

    torch.set_num_threads(max(1, threads))
    overrides = {**(overrides or {}), "threads": max(1, threads)}  # CoTrainer pins the run's threads from its config
    shared: dict[str, tuple[Path, float, float]] = {}
    records = []
    for method in methods:
        cfg = run_config(method, seed, out, overrides)
        view = stage1_view(cfg)
        summary = _train(cfg, shared.get(view))
        if view not in shared:
            shared[view] = (cfg.run_dir() / "stage1.pt", summary["stage1_seconds"], summary["stage1_cpu_seconds"])
        records.append(
            {
                "method": method,
                "seed": seed,
                "contamination": cfg.feature_benchmark.contamination,
                "top1": summary["top1_last"],
                "mean_class_accuracy": summary["mean_class_accuracy_last"],
                "seconds": summary["seconds"],
                "cpu_seconds": summary["cpu_seconds"],
                "stage1_shared": summary["stage1_shared"],
                "refinement": refinement_precision(cfg.run_dir() / "metrics.jsonl"),
                "run_dir": str(cfg.run_dir()),
            }
        )
    return records


def _job(args: tuple[int, tuple[str, ...], str, dict[str, Any], int]) -> list[dict[str, Any]]:
    seed, methods, out, overrides, threads = args
    return run_seed(seed, methods, Path(out), overrides, threads)


def _warm_up() -> None:
    """Import what a first run would (torch.optim pulls in torch._dynamo: seconds), so it is not timed as part of a run."""
    import torch

    import experiments.cotrain  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


# ---------------------------------------------------------------------- statistics
def paired(
    records: Sequence[dict[str, Any]], method: str, control: str, contamination: float | None = None
) -> dict[str, Any] | None:
    """``method - control`` of top-1 paired by seed, with its 95% bootstrap interval (None with < 2 common seeds)."""
    from experiments.report import bootstrap_interval

    pick = [r for r in records if contamination is None or r["contamination"] == contamination]
    a = {r["seed"]: r["top1"] for r in pick if r["method"] == method}
    b = {r["seed"]: r["top1"] for r in pick if r["method"] == control}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    low, high = bootstrap_interval(d)
    return {
        "method": method,
        "control": control,
        "n": len(seeds),
        "mean": float(d.mean()),
        "low": low,
        "high": high,
        "excludes_zero": bool(low > 0 or high < 0),
        "differences": d.tolist(),
        "seeds": seeds,
    }


def recovery(
    records: Sequence[dict[str, Any]], contamination: float | None = None, resamples: int = 10_000
) -> dict[str, Any] | None:
    """Claim 2: share of the negative-transfer loss that ground-truth removal recovers.

    ``share = mean(gt - adv) / mean(clean - adv)`` with a seeded percentile bootstrap over seeds, and
    the paired interval of ``(gt - adv) - 0.5 (clean - adv)`` (above 0: at least half, with 95% confidence).
    """
    from experiments.report import bootstrap_interval

    pick = [r for r in records if contamination is None or r["contamination"] == contamination]
    value = {(r["method"], r["seed"]): r["top1"] for r in pick}
    seeds = sorted(
        s
        for (m, s) in value
        if m == "adversarial-only" and ("ground-truth-removal", s) in value and ("adversarial-only-clean", s) in value
    )
    if len(seeds) < 2:
        return None
    adv = np.array([value[("adversarial-only", s)] for s in seeds])
    gain = np.array([value[("ground-truth-removal", s)] for s in seeds]) - adv
    loss = np.array([value[("adversarial-only-clean", s)] for s in seeds]) - adv
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(seeds), (resamples, len(seeds)))
    ratios = gain[idx].mean(1) / np.where(loss[idx].mean(1) == 0, np.nan, loss[idx].mean(1))
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    margin_low, margin_high = bootstrap_interval(gain - 0.5 * loss)
    return {
        "n": len(seeds),
        "share": float(gain.mean() / loss.mean()) if loss.mean() else float("nan"),
        "share_low": float(low),
        "share_high": float(high),
        "gain_minus_half_loss": float((gain - 0.5 * loss).mean()),
        "gain_minus_half_loss_low": margin_low,
        "gain_minus_half_loss_high": margin_high,
    }


def claims(records: Sequence[dict[str, Any]], contamination: float | None = None) -> dict[str, Any]:
    """The two validity claims of the module docstring, checked on ``records``."""
    loss = paired(records, "adversarial-only-clean", "adversarial-only", contamination)
    gain = paired(records, "ground-truth-removal", "adversarial-only", contamination)
    rec = recovery(records, contamination)
    out: dict[str, Any] = {"negative_transfer": None, "ground_truth_recovers_half": None}
    if loss is not None:
        out["negative_transfer"] = bool(loss["mean"] > 0 and loss["excludes_zero"])
    if gain is not None and loss is not None:
        out["ground_truth_recovers_half"] = bool(
            gain["mean"] > 0 and gain["excludes_zero"] and gain["mean"] >= 0.5 * loss["mean"]
        )
    out["recovery"] = rec
    return out


def _pct(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    return "-" if np.isnan(v).all() else f"{100 * np.nanmean(v):.1f}%"


def _pts(d: dict[str, Any]) -> str:
    return f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] (n={d['n']})" + (
        " *" if d["excludes_zero"] else ""
    )


def report_text(records: Sequence[dict[str, Any]]) -> str:
    """Per contamination level: mean ± std top-1 per method, the paired differences, the claims."""
    lines = []
    for c in sorted({r["contamination"] for r in records}):
        mine = [r for r in records if r["contamination"] == c]
        lines.append(f"contamination {c:g}: target top-1 (%), mean ± std over seeds")
        for method in dict.fromkeys(r["method"] for r in mine):
            v = 100 * np.array([r["top1"] for r in mine if r["method"] == method])
            secs = np.array([r["seconds"] for r in mine if r["method"] == method])
            cpu = np.array([r["cpu_seconds"] for r in mine if r["method"] == method])
            lines.append(
                f"  {method:24s} {v.mean():6.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:5.2f}  (n={len(v)}; "
                f"{secs.mean():.1f} s wall, {cpu.mean():.1f} s CPU per run)"
            )
        lines.append("  paired differences (points): mean [95% bootstrap interval]; * excludes 0")
        for method, control in COMPARISONS:
            d = paired(mine, method, control)
            if d is not None:
                lines.append(f"  {method + ' - ' + control:48s} {_pts(d)}")
        check = claims(mine)
        rec = check["recovery"]
        if rec is not None:
            lines.append(
                f"  ground truth recovers {100 * rec['share']:.0f}% [{100 * rec['share_low']:.0f}%, {100 * rec['share_high']:.0f}%] "
                f"of the loss; (gt - adv) - (clean - adv) / 2 = {100 * rec['gain_minus_half_loss']:+.2f} "
                f"[{100 * rec['gain_minus_half_loss_low']:+.2f}, {100 * rec['gain_minus_half_loss_high']:+.2f}]"
            )
        for name, ok in (
            ("negative transfer (clean > contaminated, interval excludes 0)", check["negative_transfer"]),
            ("ground-truth removal recovers >= half (interval excludes 0)", check["ground_truth_recovers_half"]),
        ):
            if ok is not None:
                lines.append(f"  claim: {name}: {'HOLDS' if ok else 'FAILS'}")
        precision = [
            (r["method"], dom, v)
            for r in mine
            for dom, v in r["refinement"].items()
            if r["method"].startswith("mmir") or r["method"] == "random-removal"
        ]
        for method in dict.fromkeys(m for m, _, _ in precision):
            for dom in ("source", "target"):
                vals = [v for m, d, v in precision if m == method and d == dom]
                if vals:
                    lines.append(
                        f"  {method:16s} {dom}: removed rows that are planted negatives {_pct([v['precision'] for v in vals])}, "
                        f"planted negatives removed {_pct([v['recall'] for v in vals])}"
                    )
        lines.append("")
    return "\n".join(lines)


def contamination_plot(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Target top-1 against the contamination level per method (mean over seeds, 95% bootstrap interval of the mean).

    Needs matplotlib (``pip install mmir[plots]``); returns None without it or with fewer than two levels.
    """
    from experiments.report import bootstrap_interval

    levels = sorted({r["contamination"] for r in records})
    if len(levels) < 2:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in records):
        xs, ys, lows, highs = [], [], [], []
        for c in levels:
            v = np.array([r["top1"] for r in records if r["method"] == method and r["contamination"] == c])
            if len(v) == 0:
                continue
            # percentile bootstrap of the mean over seeds
            low, high = bootstrap_interval(v) if len(v) > 1 else (v[0], v[0])
            xs.append(c), ys.append(100 * v.mean()), lows.append(100 * low), highs.append(100 * high)
        ax.plot(xs, ys, marker="o", label=method)
        ax.fill_between(xs, lows, highs, alpha=0.15)
    ax.set_xlabel("contamination (fraction of planted negatives per training domain)")
    ax.set_ylabel("target top-1 (%)")
    n = len({r["seed"] for r in records})
    ax.set_title(f"Feature benchmark: {n} seeds, 95% intervals of the mean", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.feature_benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes every run's folder under OUT and OUT/results.json (runs, differences, claims, times).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/feature-benchmark"),
        help="run folders and results.json (default: %(default)s)",
    )
    p.add_argument("--seeds", default="0-19", help="seeds, e.g. 0-19 (the test seeds, default) or 100-109 (validation)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated presets of experiments/configs/feature-benchmark (default: %(default)s)",
    )
    p.add_argument(
        "--contamination",
        default="",
        help="comma-separated contamination levels (default: the presets' 0.3); each level runs under OUT/c<level>",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel processes, one seed each (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default: %(default)s)")
    add_set_option(p, "override a config value of every run (as `mmir train --set`), e.g. stage2.steps=100")
    return p.parse_args(argv)


def run_jobs(
    job: Callable[[Any], list[dict[str, Any]]],
    jobs: Sequence[Any],
    workers: int,
    done: Callable[[Any, list[dict[str, Any]]], None],
) -> list[dict[str, Any]]:
    """``job(j)`` for every ``j`` of ``jobs``: here when ``workers <= 1``, else in ``workers`` spawned processes.

    ``job`` must be a module-level function (it is pickled); every process is warmed up first.
    ``done(j, records)`` is called as each finishes (in completion order when parallel).
    """
    records: list[dict[str, Any]] = []
    if workers <= 1:
        _warm_up()
        for j in jobs:
            mine = job(j)
            records += mine
            done(j, mine)
        return records
    # spawn: fresh interpreters, no OpenMP state inherited from this process
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up
    ) as pool:
        futures = {pool.submit(job, j): j for j in jobs}
        for future in as_completed(futures):
            mine = future.result()
            records += mine
            done(futures[future], mine)
    return records


def run_benchmark(
    out: Path,
    seeds: Sequence[int],
    methods: Sequence[str],
    contaminations: Sequence[float | None] = (None,),
    overrides: dict[str, Any] | None = None,
    workers: int = 2,
    threads: int = 1,
    log=print,
) -> list[dict[str, Any]]:
    """Every (contamination, seed) job in ``workers`` processes; returns one record per run."""
    jobs = []
    for c in contaminations:
        extra = dict(overrides or {})
        folder = out
        if c is not None:
            extra["feature_benchmark.contamination"] = c
            folder = out / f"c{c:g}"
        for seed in seeds:
            jobs.append((seed, tuple(methods), str(folder), extra, threads))

    def done(job: tuple, mine: list[dict[str, Any]]) -> None:
        log(f"seed {job[0]:3d} ({job[2]}): " + "  ".join(f"{r['method']} {100 * r['top1']:.1f}" for r in mine))

    records = run_jobs(_job, jobs, workers, done)
    order = {m: i for i, m in enumerate(methods)}
    return sorted(records, key=lambda r: (r["contamination"], r["seed"], order[r["method"]]))


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.config import ConfigError, parse_overrides

    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # inherited by the worker processes
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in known_methods()]
    if unknown:
        print(f"unknown method(s) {unknown}; presets: {', '.join(known_methods())}", file=sys.stderr)
        return 2
    try:
        seeds = parse_seeds(args.seeds)
        contaminations: list[float | None] = [float(c) for c in args.contamination.split(",") if c.strip()] or [None]
    except ValueError as err:
        print(f"bad --seeds or --contamination: {err}", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.overrides)
        for method in methods:  # a bad override or preset fails here, before any process starts
            for c in contaminations:
                run_config(
                    method,
                    seeds[0],
                    args.out,
                    {**overrides, **({} if c is None else {"feature_benchmark.contamination": c})},
                )
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    records = run_benchmark(args.out, seeds, methods, contaminations, overrides, args.workers, args.threads)
    wall = time.perf_counter() - start
    text = report_text(records)
    print(text)
    cpu = sum(r["cpu_seconds"] for r in records)
    print(
        f"wall time {wall:.0f} s for {len(records)} runs ({len(seeds)} seeds x {len(methods)} methods x {len(contaminations)} "
        f"contamination level(s)) in {args.workers} process(es) of {args.threads} thread(s); "
        f"{cpu / max(1, len(records)):.1f} s CPU per run on average (stage 1 shared where possible)"
    )
    levels = sorted({r["contamination"] for r in records})
    results = {
        "seeds": seeds,
        "methods": methods,
        "overrides": overrides,
        "wall_seconds": wall,
        "workers": args.workers,
        "threads": args.threads,
        "runs": records,
        "differences": {
            f"{c:g}": [d for m, ctl in COMPARISONS if (d := paired(records, m, ctl, c)) is not None] for c in levels
        },
        "claims": {f"{c:g}": claims(records, c) for c in levels},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json_text(results, indent=1))
    print(f"results: {args.out / 'results.json'}")
    plot = contamination_plot(records, args.out / "contamination.png")
    if plot is not None:
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
