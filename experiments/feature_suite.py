"""The feature benchmark as a suite: methods x generator geometries x seeds, and how much of the bound each method reaches.

A geometry is an overlay ``experiments/configs/feature-benchmark/geometries/<name>.toml`` that sets
only ``[feature_benchmark]`` keys (the generator's parameters, :mod:`features.data.negative_transfer`).
A run is the method's preset ``experiments/configs/feature-benchmark/<method>.toml`` with the
geometry's keys layered on top (as ``--set`` overrides: the same layering a file ``base =
["feature-benchmark/<method>", "feature-benchmark/geometries/<name>"]`` gives), trained in
``OUT/<geometry>/<method>-seed<seed>`` by :func:`experiments.feature_benchmark.run_seed`, which
shares stage 1 between methods of a seed and reuses finished runs.

What is reported, per geometry and pooled over the kept geometries (target top-1, points):

- negative-transfer loss ``L = adversarial-only-clean - adversarial-only``;
- ground-truth gain ``G = ground-truth-removal - adversarial-only`` (the bound of refinement);
- for every other method ``m``, the share of the bound it recovers,
  ``S_m = mean(m - adversarial-only) / mean(ground-truth-removal - adversarial-only)``;
- removal precision of each method with removals (planted negatives among the rows it removed from
  L_adv over stage 2, both modalities pooled) against chance: the planted negatives' share of the
  rows the refiners saw, which is what a uniform pick would hit.

Estimators. All differences are paired by seed. Per geometry ``g`` with seeds ``1..n_g``, write
``a_g``, ``b_g`` for the per-seed differences ``m - adv`` and ``gt - adv``. The per-geometry share
is the ratio of means ``mean(a_g) / mean(b_g)``; the pooled share is the ratio of the means over
geometries, ``mean_g mean(a_g) / mean_g mean(b_g)`` (each geometry weighs the same whatever its
seed count; this is not the mean of the per-geometry shares, which a small bound would blow up).
Pooled losses and gains are ``mean_g mean(d_g)``. 95% intervals are percentile bootstraps with
10,000 seeded resamples: each resample draws ``n_g`` seeds with replacement *within each geometry*
(a stratified bootstrap), keeping a seed's differences together so the pairing survives, and
recomputes the statistic; a resample whose denominator is not positive is dropped (the share is
undefined there) and the count of dropped ones is kept. With one geometry the difference interval
is the same as ``mmir report``'s :func:`experiments.report.bootstrap_interval`.

Only geometries whose ground-truth gain is at least ``--min-gain`` points (default 3) are kept
for the pooled numbers: where removing exactly the planted negatives barely helps there is no
bound to recover a share of. Dropped geometries are still reported, marked as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ConfigError, RunConfig, parse_overrides
from experiments.config_layers import add_set_option, read_toml
from experiments.feature_benchmark import PRESETS, known_methods, parse_seeds, run_config, run_jobs, run_seed
from features.atomic_io import atomic_write_text, json_text
from features.data.negative_transfer import NegativeTransferParams

GEOMETRIES = PRESETS / "geometries"
BASELINE = "adversarial-only"
CLEAN = "adversarial-only-clean"
BOUND = "ground-truth-removal"
METHODS: tuple[str, ...] = (BASELINE, CLEAN, BOUND, "random-removal", "mmir", "mmir-robust")
RESAMPLES = 10_000
EXAMPLES = """examples:
  OMP_NUM_THREADS=1 python -m experiments.feature_suite --out /work/runs/suite --jobs 1
  python -m experiments.feature_suite --geometries default,rotation-90 --seeds 0-4 --out runs/suite-try
  python -m experiments.feature_suite --methods adversarial-only,adversarial-only-clean,ground-truth-removal,random-removal
  python -m experiments.feature_suite --seeds 100-109 --out runs/suite-validation   # validation seeds

Writes every run under OUT/<geometry>/, and OUT/suite.md (the tables) and OUT/suite.json (runs and statistics).
"""


# ---------------------------------------------------------------------- geometries
def known_geometries() -> list[str]:
    """The overlays of ``experiments/configs/feature-benchmark/geometries`` (a new file is a new geometry)."""
    return sorted(p.stem for p in GEOMETRIES.glob("*.toml"))


def geometry_params(name: str) -> dict[str, Any]:
    """The ``[feature_benchmark]`` keys a geometry overlay sets; ConfigError when it sets anything else."""
    path = GEOMETRIES / f"{name}.toml"
    table = read_toml(path, "geometry overlay")
    if set(table) != {"feature_benchmark"} or not isinstance(table["feature_benchmark"], dict):
        raise ConfigError(f"{path}: a geometry sets only [feature_benchmark] keys, found {sorted(table)}")
    keys = table["feature_benchmark"]
    unknown = sorted(set(keys) - set(NegativeTransferParams.field_names()))
    if unknown:
        raise ConfigError(f"{path}: unknown [feature_benchmark] key(s) {unknown}")
    if "clean" in keys:  # the clean reference is a method (adversarial-only-clean), not a geometry
        raise ConfigError(f"{path}: a geometry must not set clean")
    return dict(keys)


def geometry_overrides(name: str) -> dict[str, Any]:
    """A geometry as dotted overrides (``feature_benchmark.rotation`` ...) to layer over a method preset."""
    return {f"feature_benchmark.{k}": v for k, v in geometry_params(name).items()}


def suite_config(
    method: str, geometry: str, seed: int, out: Path, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """The run of ``method`` on ``geometry`` with ``seed``: its folder is ``out/<geometry>/<method>-seed<seed>``."""
    return run_config(method, seed, out / geometry, {**geometry_overrides(geometry), **(overrides or {})})


def geometry_label(name: str) -> str:
    """What a geometry changes against the generator's defaults, e.g. ``rotation=90``."""
    defaults = NegativeTransferParams().to_dict()
    changed = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in geometry_params(name).items()
        if defaults[k] != v
    ]
    return ", ".join(changed) or "generator defaults"


# ---------------------------------------------------------------------- removals
def removal_counts(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per domain, over stage 2 and both modalities: rows seen by the refiners, rows removed, and
    how many of each were planted negatives (from ``metrics.jsonl``).

    Rows seen per step come from ``removed / removal_rate``; a step that removed nothing does not
    say, so it counts half of ``stage2.batch_size`` (the refiners see one domain's half-batch).
    """
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return {}
    config = json.loads((run_dir / "config.json").read_text())
    half = config["stage2"]["batch_size"] // 2
    sums: dict[str, dict[str, float]] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") != 2:
            continue
        for key, value in record.items():
            if not key.startswith("removed/"):
                continue
            agent = key.split("/", 1)[1]  # modality/domain
            rate = record.get(f"removal_rate/{agent}", 0.0)
            entry = sums.setdefault(agent.rsplit("/", 1)[-1], dict.fromkeys(("rows", "removed", "hit", "present"), 0.0))
            entry["rows"] += value / rate if rate > 0 else half
            entry["removed"] += value
            entry["hit"] += record.get(f"negatives_removed/{agent}", 0)
            entry["present"] += record.get(f"negatives_present/{agent}", 0)
    return {
        dom: {
            **s,
            "precision": s["hit"] / s["removed"] if s["removed"] else float("nan"),
            "chance": s["present"] / s["rows"] if s["rows"] else float("nan"),
        }
        for dom, s in sorted(sums.items())
    }


def signal_aucs(metrics_paths: Iterable[Path]) -> dict[str, dict[str, float]]:
    """domain -> signal -> mean ``diag/auc/SIGNAL/<modality>/<domain>`` over the stage-2 steps of the runs whose
    ``metrics.jsonl`` files are given (both modalities; runs that log none add nothing)."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in metrics_paths:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("stage") != 2:
                continue
            for key, value in record.items():
                if key.startswith("diag/auc/") and isinstance(value, (int, float)) and math.isfinite(value):
                    signal, _modality, domain = key[len("diag/auc/") :].rsplit("/", 2)
                    sums[domain][signal].append(float(value))
    return {dom: {s: float(np.mean(v)) for s, v in sorted(sig.items())} for dom, sig in sorted(sums.items())}


# ---------------------------------------------------------------------- running
def _job(args: tuple[str, int, tuple[str, ...], str, dict[str, Any]]) -> list[dict[str, Any]]:
    geometry, seed, methods, out, overrides = args
    records = run_seed(seed, methods, Path(out) / geometry, {**geometry_overrides(geometry), **overrides}, 1)
    for r in records:
        r["geometry"] = geometry
        r["removal"] = removal_counts(Path(r["run_dir"]))
    return records


def run_suite(
    out: Path,
    geometries: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    jobs: int = 1,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Every (geometry, seed) of ``methods`` in ``jobs`` processes of one torch thread; one record per run."""
    work = [(g, s, tuple(methods), str(out), dict(overrides or {})) for g in geometries for s in seeds]
    records = run_jobs(_job, work, jobs, lambda job, _: log(f"{job[0]} seed {job[1]} done"))
    g_order, m_order = {g: i for i, g in enumerate(geometries)}, {m: i for i, m in enumerate(methods)}
    return sorted(records, key=lambda r: (g_order[r["geometry"]], r["seed"], m_order[r["method"]]))


# ---------------------------------------------------------------------- statistics
def stratified_interval(
    numerators: Sequence[np.ndarray],
    denominators: Sequence[np.ndarray] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """``mean_g mean(num_g)`` (or its ratio to ``mean_g mean(den_g)``) with a 95% stratified percentile bootstrap.

    One stratum per geometry; ``num_g[i]`` and ``den_g[i]`` belong to the same seed and are resampled
    together. Returns ``value``, ``low``, ``high`` and ``dropped`` (resamples whose denominator was
    not positive, left out of the interval).
    """
    nums = [np.asarray(x, dtype=np.float64) for x in numerators]
    dens = None if denominators is None else [np.asarray(x, dtype=np.float64) for x in denominators]
    if not nums or any(x.size == 0 for x in nums):
        raise ValueError("every stratum needs at least one paired difference")
    if dens is not None and [x.size for x in dens] != [x.size for x in nums]:
        raise ValueError("numerators and denominators must pair up seed by seed")
    rng = np.random.default_rng(seed)
    num_means = np.zeros(resamples)
    den_means = np.zeros(resamples)
    for g, x in enumerate(nums):
        idx = rng.integers(0, x.size, (resamples, x.size))  # the same draw as report.bootstrap_interval for one stratum
        num_means += x[idx].mean(axis=1) / len(nums)
        if dens is not None:
            den_means += dens[g][idx].mean(axis=1) / len(nums)
    value = float(np.mean([x.mean() for x in nums]))
    dropped = 0
    if dens is None:
        stats = num_means
    else:
        den = float(np.mean([x.mean() for x in dens]))
        value = value / den if den > 0 else float("nan")
        ok = den_means > 0
        dropped = int((~ok).sum())
        stats = num_means[ok] / den_means[ok]
    if stats.size == 0:
        return {"value": value, "low": float("nan"), "high": float("nan"), "dropped": dropped}
    low, high = np.percentile(stats, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high), "dropped": dropped}


def paired_by_seed(records: Sequence[dict[str, Any]], method: str, control: str, key: str = "top1") -> dict[int, float]:
    """``method - control`` per seed over the seeds both have."""
    a = {r["seed"]: r[key] for r in records if r["method"] == method}
    b = {r["seed"]: r[key] for r in records if r["method"] == control}
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def _strata(
    records: Sequence[dict[str, Any]], geometries: Sequence[str], method: str, control: str
) -> list[np.ndarray] | None:
    out = []
    for g in geometries:
        d = paired_by_seed([r for r in records if r["geometry"] == g], method, control)
        if not d:
            return None
        out.append(np.array(list(d.values())))
    return out


def difference(
    records: Sequence[dict[str, Any]], geometries: Sequence[str], method: str, control: str
) -> dict[str, Any] | None:
    """``method - control`` paired by seed, mean over ``geometries`` (one: that geometry), with its interval."""
    strata = _strata(records, geometries, method, control)
    if strata is None:
        return None
    return {**stratified_interval(strata), "n": int(sum(x.size for x in strata))}


def share(records: Sequence[dict[str, Any]], geometries: Sequence[str], method: str) -> dict[str, Any] | None:
    """Share of the ground-truth gain that ``method`` recovers over ``geometries`` (estimator: module docstring)."""
    nums, dens = [], []
    for g in geometries:
        mine = [r for r in records if r["geometry"] == g]
        a, b = paired_by_seed(mine, method, BASELINE), paired_by_seed(mine, BOUND, BASELINE)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            return None
        nums.append(np.array([a[s] for s in seeds]))
        dens.append(np.array([b[s] for s in seeds]))
    return {**stratified_interval(nums, dens), "n": int(sum(x.size for x in nums))}


def precision(
    records: Sequence[dict[str, Any]], geometries: Sequence[str], method: str, domain: str
) -> dict[str, Any] | None:
    """Removal precision of ``method`` in ``domain``, its chance rate, and precision - chance with its interval (per run, paired)."""
    strata, prec, chance = [], [], []
    for g in geometries:
        runs = [
            r["removal"][domain]
            for r in records
            if r["geometry"] == g and r["method"] == method and r["removal"].get(domain, {}).get("removed")
        ]
        if not runs:
            return None
        p = np.array([x["precision"] for x in runs])
        c = np.array([x["chance"] for x in runs])
        strata.append(p - c)
        prec.append(p.mean())
        chance.append(c.mean())
    return {
        "precision": float(np.mean(prec)),
        "chance": float(np.mean(chance)),
        "excess": stratified_interval(strata),
        "n": int(sum(x.size for x in strata)),
    }


def summarise(records: Sequence[dict[str, Any]], min_gain: float = 0.03) -> dict[str, Any]:
    """Every statistic of the module docstring, per geometry and pooled over the kept ones (``min_gain`` as a fraction)."""
    geometries = list(dict.fromkeys(r["geometry"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    others = [m for m in methods if m not in (BASELINE, BOUND, CLEAN)]
    per: dict[str, Any] = {}
    for g in geometries:
        mine = [r for r in records if r["geometry"] == g]
        gain = difference(mine, [g], BOUND, BASELINE)
        per[g] = {
            "top1": {m: float(np.mean([r["top1"] for r in mine if r["method"] == m])) for m in methods},
            "loss": difference(mine, [g], CLEAN, BASELINE),
            "gain": gain,
            "kept": bool(gain is not None and gain["value"] >= min_gain),
            "signal_aucs": signal_aucs(Path(r["run_dir"]) / "metrics.jsonl" for r in mine if r.get("run_dir")),
        }
    kept = [g for g in geometries if per[g]["kept"]]
    groups = {g: [g] for g in geometries} | ({"pooled": kept} if kept else {})
    out: dict[str, Any] = {
        "geometries": per,
        "kept": kept,
        "min_gain": min_gain,
        "share": {},
        "versus": {},
        "precision": {},
    }
    if kept:
        out["pooled"] = {
            "loss": difference(records, kept, CLEAN, BASELINE),
            "gain": difference(records, kept, BOUND, BASELINE),
        }
    for m in others:
        out["share"][m] = {name: share(records, gs, m) for name, gs in groups.items()}
        out["versus"][m] = {name: difference(records, gs, m, BASELINE) for name, gs in groups.items()}
    for m in methods:
        for dom in ("source", "target"):
            cells = {name: precision(records, gs, m, dom) for name, gs in groups.items()}
            if any(cells.values()):
                out["precision"].setdefault(m, {})[dom] = cells
    return out


# ---------------------------------------------------------------------- tables
def _pts(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    star = " *" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{star}"


def _share(d: dict[str, Any] | None) -> str:
    if d is None or np.isnan(d["value"]):
        return "-"
    return f"{100 * d['value']:.0f}% [{100 * d['low']:.0f}, {100 * d['high']:.0f}]"


def markdown(summary: dict[str, Any]) -> str:
    """The suite's tables as markdown: geometries, shares recovered, differences, removal precision."""
    per, kept = summary["geometries"], summary["kept"]
    cols = list(per) + (["pooled"] if kept else [])

    def head(first: str) -> str:
        names = (c if c == "pooled" or c in kept else f"{c} (dropped)" for c in cols)
        return f"| {first} | " + " | ".join(names) + " |\n|---|" + "---:|" * len(cols)

    lines = [
        "Target top-1, points; paired by seed; mean [95% bootstrap interval], * the interval excludes 0. "
        f"Pooled: mean over the kept geometries ({', '.join(kept) or 'none'}), stratified bootstrap.",
        "",
        "| geometry | what it changes | n | adversarial-only % | clean % | ground truth % | loss (clean − adv) | GT gain (GT − adv) | GT recovers of loss | kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for g, s in per.items():
        t = s["top1"]
        rec = (
            f"{100 * s['gain']['value'] / s['loss']['value']:.0f}%"
            if s["gain"] and s["loss"] and s["loss"]["value"] > 0
            else "-"
        )
        lines.append(
            f"| {g} | {geometry_label(g) if (GEOMETRIES / f'{g}.toml').is_file() else '?'} | {s['gain']['n'] if s['gain'] else 0} | "
            + " | ".join(f"{100 * t[m]:.1f}" if m in t else "-" for m in (BASELINE, CLEAN, BOUND))
            + f" | {_pts(s['loss'])} | {_pts(s['gain'])} | {rec} | {'yes' if s['kept'] else 'no'} |"
        )
    if kept:
        p = summary["pooled"]
        lines.append(
            f"| **pooled** | {len(kept)} geometries | {p['gain']['n']} | | | | {_pts(p['loss'])} | {_pts(p['gain'])} | | |"
        )
    if summary["share"]:
        lines += [
            "",
            "Share of the ground-truth gain recovered, (m − adv) / (GT − adv): value [95% interval]",
            "",
            head("method"),
        ]
        for m, cells in summary["share"].items():
            lines.append(f"| {m} | " + " | ".join(_share(cells.get(c)) for c in cols) + " |")
        lines += ["", "m − adversarial-only (points)", "", head("method")]
        for m, cells in summary["versus"].items():
            lines.append(f"| {m} | " + " | ".join(_pts(cells.get(c)) for c in cols) + " |")
    if summary["precision"]:
        lines += [
            "",
            "Removal precision (planted negatives among removed rows) vs chance (their share of the rows the refiners saw); "
            "precision − chance in points [95% interval]",
            "",
            head("method / domain"),
        ]
        for m, doms in summary["precision"].items():
            for dom, cells in doms.items():
                lines.append(
                    f"| {m} / {dom} | "
                    + " | ".join(
                        "-"
                        if (c := cells.get(col)) is None
                        else f"{100 * c['precision']:.1f}% vs {100 * c['chance']:.1f}% = "
                        f"{c['precision'] / c['chance']:.2f}x ({_pts(c['excess'])})"
                        for col in cols
                    )
                    + " |"
                )
    signals = sorted({s for g in per for dom in per[g].get("signal_aucs", {}).values() for s in dom})
    if signals:
        lines += [
            "",
            "negative_auc of each relevance signal, P(planted negative rated less relevant than a clean row), "
            "mean over the stage-2 steps of the runs that log it (0.5: blind)",
        ]
        for dom in ("source", "target"):
            lines += ["", f"{dom} rows:", "", "| signal | " + " | ".join(per) + " |", "|---|" + "---:|" * len(per)]
            for s in signals:
                cells = [per[g]["signal_aucs"].get(dom, {}).get(s) for g in per]
                lines.append(f"| {s} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.feature_suite",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--geometries",
        default=",".join(known_geometries()),
        help="comma-separated geometries (default: all: %(default)s)",
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated presets of experiments/configs/feature-benchmark (default: %(default)s; known: "
        + ", ".join(known_methods())
        + ")",
    )
    p.add_argument("--seeds", default="0-19", help="seeds, e.g. 0-19 (test, default) or 100-109 (validation)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/feature-suite"),
        help="run folders, suite.md and suite.json (default: %(default)s)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel processes of one torch thread, one (geometry, seed) each (default: %(default)s)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=3.0,
        help="keep geometries whose ground-truth gain is at least this many points (default: %(default)s)",
    )
    add_set_option(p, "override a config value of every run, e.g. stage2.steps=20")
    return p


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.Namespace, list[str], list[str], list[int], dict[str, Any]]:
    """Arguments, geometries, methods, seeds and overrides; bad input exits with a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    geometries = [g.strip() for g in args.geometries.split(",") if g.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not geometries or (bad := [g for g in geometries if g not in known_geometries()]):
        parser.error(
            f"unknown geometry {bad if geometries else '(none given)'}; known: {', '.join(known_geometries())}"
        )
    if bad := [m for m in methods if m not in known_methods()]:
        parser.error(f"unknown method {bad}; presets: {', '.join(known_methods())}")
    if BASELINE not in methods or BOUND not in methods:
        parser.error(f"--methods must include {BASELINE} and {BOUND} (every share is relative to them)")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        parser.error(f"bad --seeds: {err}")
    try:
        overrides = parse_overrides(args.overrides)
        for g in geometries:  # a bad geometry file, override or preset fails here, before anything trains
            for m in methods:
                suite_config(m, g, seeds[0], args.out, overrides)
    except ConfigError as err:
        parser.error(str(err).splitlines()[0])
    return args, geometries, methods, seeds, overrides


def main(argv: Sequence[str] | None = None) -> int:
    args, geometries, methods, seeds, overrides = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes
    start = time.perf_counter()
    records = run_suite(args.out, geometries, methods, seeds, args.jobs, overrides)
    wall = time.perf_counter() - start
    summary = summarise(records, args.min_gain / 100)
    text = markdown(summary)
    cpu = sum(r["cpu_seconds"] for r in records)
    footer = (
        f"{len(records)} runs ({len(geometries)} geometries x {len(methods)} methods x {len(seeds)} seeds), "
        f"{wall:.0f} s wall in {args.jobs} process(es); {cpu / max(1, len(records)):.1f} s CPU per run on average"
    )
    print(text + "\n" + footer)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "suite.md", text + "\n" + footer + "\n")
    payload = {
        "geometries": geometries,
        "methods": methods,
        "seeds": seeds,
        "overrides": overrides,
        "wall_seconds": wall,
    }
    atomic_write_text(args.out / "suite.json", json_text({**payload, "summary": summary, "runs": records}, indent=1))
    print(f"tables: {args.out / 'suite.md'}; runs and statistics: {args.out / 'suite.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
