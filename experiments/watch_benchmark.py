"""The smartwatch benchmark: source-only, adversarial-only, MMIR (and the supervised-target upper bound)
over seeds and both arm directions, through the co-training loop, plus a linear reference.

Every run is the preset ``experiments/configs/watch/<direction>/<method>.toml`` (or
``supervised-target-<arm>.toml``) with ``seed`` and the output folder overridden, trained by
:class:`~experiments.cotrain.CoTrainer` exactly as ``mmir train`` does; other methods of
:mod:`experiments.methods` (``--methods mmd,adabn,mcd``) are applied to the source-only preset. All
methods of one direction and seed but the supervised target share one stage 1 (their configs agree on
everything stage 1 uses, which this script checks): the source-only run trains it and the others
start stage 2 from its ``stage1.pt`` (:meth:`CoTrainer.start_stage2_from`, the same state a full run
reaches: ``mmir train`` of the MMIR preset gives the same numbers). The wall time reported per run
counts the shared stage 1 once for each method. Finished runs (``summary.json`` with the same config)
are skipped, so an interrupted benchmark continues.

The linear reference is a multinomial logistic regression (L-BFGS, L2 1e-3) on 24 per-window
features (mean, std, min, max of each standardised channel), trained on the source arm (source-only)
or on the target arm's training subjects (target-trained), tested on the same test split as the runs.

Usage::

    OMP_NUM_THREADS=1 python -m experiments.watch_benchmark --out runs/watch-benchmark
    python -m experiments.watch_benchmark --reference-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.config import CONFIG_DIR, RunConfig, load_config
from experiments.config_layers import add_set_option
from experiments.runs import finished_run
from features.atomic_io import atomic_write_text, json_text

WATCH_CONFIGS = CONFIG_DIR / "watch"
DIRECTIONS: tuple[str, ...] = ("left-to-right", "right-to-left")
METHODS: tuple[str, ...] = ("source-only", "adversarial-only", "mmir", "supervised-target")
AGENT_KEYS: tuple[str, ...] = ("acc/source", "acc/target", "gyro/source", "gyro/target")


def arms(direction: str) -> tuple[str, str]:
    """``"left-to-right"`` -> ``("left", "right")``."""
    source, sep, target = direction.partition("-to-")
    if not sep or direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return source, target


def preset_path(direction: str, method: str) -> Path:
    if method == "supervised-target":
        return WATCH_CONFIGS / f"supervised-target-{arms(direction)[1]}.toml"
    return WATCH_CONFIGS / direction / f"{method}.toml"


def run_config(direction: str, method: str, seed: int, out: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset of ``(direction, method)`` with seed, run folder ``out/direction/method-seedN`` and ``overrides``.

    A method without a watch preset (a baseline of :mod:`experiments.methods`, e.g. ``"mmd"``) is
    applied to the direction's source-only preset with :func:`experiments.methods.apply_method`.
    """
    extra = {
        "seed": seed,
        "output_dir": str(out / direction),
        "name": f"{method}-seed{seed}",
        "device": "cpu",
        **(overrides or {}),
    }
    if method in METHODS:
        return load_config(preset_path(direction, method), extra)
    from experiments.methods import apply_method

    return apply_method(load_config(preset_path(direction, "source-only"), extra), method)


def known_methods() -> list[str]:
    """The watch presets' methods, then the other methods of :mod:`experiments.methods` (when it exists)."""
    try:
        from experiments.methods import METHODS as REGISTERED
    except ImportError:  # pragma: no cover - a tree without the baselines
        return list(METHODS)
    return list(METHODS) + [m for m, spec in REGISTERED.items() if m not in METHODS and not spec.source_is_target]


def stage1_view(cfg: RunConfig) -> dict[str, Any]:
    """Everything stage 1 depends on (for checking that methods may share it)."""
    d = cfg.to_dict()
    return {
        "seed": d["seed"],
        "data": d["data"],
        "model": d["model"],
        "stage1": d["stage1"],
        "precision": d["precision"],
    }


# ---------------------------------------------------------------------- metrics of a finished run
def agent_statistics(metrics_path: Path) -> dict[str, dict[str, float]]:
    """Per agent over all stage-2 steps: mean removal rate, mean reward, removed windows, and the
    removal rate over the last 100 steps (from the run's ``metrics.jsonl``)."""
    per: dict[str, dict[str, list[float]]] = {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") != 2:
            continue
        for key, value in record.items():
            for stat in ("removal_rate", "reward", "removed"):
                if key.startswith(stat + "/"):
                    per.setdefault(key[len(stat) + 1 :], {}).setdefault(stat, []).append(float(value))
    return {
        agent: {
            "removal_rate": float(np.mean(s["removal_rate"])),
            "mean_reward": float(np.mean(s["reward"])),
            "removed": float(np.sum(s["removed"])),
            "removal_rate_last100": float(np.mean(s["removal_rate"][-100:])),
        }
        for agent, s in sorted(per.items())
    }


def refinement_summary(
    stats_path: Path, classes: Sequence[str], tau: float = 0.5
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """From ``refinement_stats.json`` (when the loop writes it), per agent: the share of each class's
    windows it removed, and the discriminator relevance (eq. 3) of the rows it kept and removed (mean,
    and the share below ``tau``, from the 20-bin histograms at bin centres). An agent that selects at
    random removes 20% of every class and has the same relevance for both."""
    if not stats_path.is_file():
        return {}, {}
    state = json.loads(stats_path.read_text())
    per_class, relevance = {}, {}
    for agent, s in state.get("agents", {}).items():
        seen, removed = (
            np.asarray(s.get("seen_per_class", []), float),
            np.asarray(s.get("removed_per_class", []), float),
        )
        if len(seen) == len(classes):
            per_class[agent] = (removed / np.maximum(seen, 1)).tolist()
        kept_h, removed_h = (
            np.asarray(s.get("kept_histogram", []), float),
            np.asarray(s.get("removed_histogram", []), float),
        )
        if len(kept_h) and kept_h.sum() and removed_h.sum():
            centres = (np.arange(len(kept_h)) + 0.5) / len(kept_h)
            below = centres < tau
            relevance[agent] = {
                "kept_mean": float(centres @ kept_h / kept_h.sum()),
                "removed_mean": float(centres @ removed_h / removed_h.sum()),
                "kept_below_tau": float(kept_h[below].sum() / kept_h.sum()),
                "removed_below_tau": float(removed_h[below].sum() / removed_h.sum()),
            }
    return per_class, relevance


# ---------------------------------------------------------------------- running
@dataclass
class RunResult:
    direction: str
    method: str
    seed: int
    top1: float
    mean_class_accuracy: float
    seconds: float  # stage 1 + stage 2 wall time, what `mmir train` of the preset takes
    stage1_seconds: float
    agents: dict[str, dict[str, float]]
    class_removal: dict[str, list[float]]  # agent -> share of each class's windows removed
    relevance: dict[str, dict[str, float]]  # agent -> relevance of kept / removed rows
    run_dir: str


def _train(cfg: RunConfig, stage1_from: Path | None, stage1_seconds: float) -> dict[str, Any]:
    from experiments.cotrain import CoTrainer

    done = finished_run(cfg, extra=("timing.json",))
    if done is not None:
        return done
    start = time.perf_counter()
    marks: dict[str, float] = {}

    def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
        if stage == 1 and step == cfg.stage1.steps:
            marks["stage1"] = time.perf_counter() - start

    trainer = CoTrainer(cfg, on_step=on_step)
    if stage1_from is not None:
        trainer.start_stage2_from(stage1_from)
    summary = trainer.run()
    seconds = time.perf_counter() - start
    if stage1_from is not None:
        timing = {"seconds": stage1_seconds + seconds, "stage1_seconds": stage1_seconds}
    else:
        timing = {"seconds": seconds, "stage1_seconds": marks.get("stage1", 0.0)}
    atomic_write_text(cfg.run_dir() / "timing.json", json_text(timing))
    return {**summary, **timing}


def run_benchmark(
    out: Path,
    seeds: Sequence[int],
    directions: Sequence[str] = DIRECTIONS,
    methods: Sequence[str] = METHODS,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> list[RunResult]:
    """Train every (direction, seed, method) run sequentially; returns one :class:`RunResult` each."""
    from features.data.watch import CLASSES

    results: list[RunResult] = []
    for direction in directions:
        for seed in seeds:
            stage1_ckpt: Path | None = None
            stage1_seconds = 0.0
            reference_view = None
            for method in sorted(
                methods, key=lambda m: m != "source-only"
            ):  # source-only first: it trains the shared stage 1
                cfg = run_config(direction, method, seed, out, overrides)
                shared = method != "supervised-target" and "source-only" in methods
                if shared and method != "source-only":
                    if stage1_view(cfg) != reference_view:
                        raise RuntimeError(
                            f"{preset_path(direction, method)} differs from source-only in what stage 1 uses; cannot share it"
                        )
                    summary = _train(cfg, stage1_ckpt, stage1_seconds)
                else:
                    summary = _train(cfg, None, 0.0)
                if shared and method == "source-only":
                    stage1_ckpt, stage1_seconds, reference_view = (
                        cfg.run_dir() / "stage1.pt",
                        summary["stage1_seconds"],
                        stage1_view(cfg),
                    )
                per_class, relevance = refinement_summary(
                    cfg.run_dir() / "refinement_stats.json", CLASSES, cfg.env.tau_t
                )
                r = RunResult(
                    direction,
                    method,
                    seed,
                    summary["top1_last"],
                    summary["mean_class_accuracy_last"],
                    summary["seconds"],
                    summary["stage1_seconds"],
                    agent_statistics(cfg.run_dir() / "metrics.jsonl"),
                    per_class,
                    relevance,
                    str(cfg.run_dir()),
                )
                results.append(r)
                log(
                    f"{direction:14s} {method:17s} seed {seed}: top-1 {r.top1:.3f}  mean-class {r.mean_class_accuracy:.3f}  "
                    f"({r.seconds:.0f} s{'' if r.stage1_seconds == 0 else f', stage 1 {r.stage1_seconds:.0f} s'})"
                )
    return results


# ---------------------------------------------------------------------- linear reference
def window_features(ds: Any) -> torch.Tensor:
    """Mean, std, min and max of every channel of every window: ``[N, 4 * channels]``."""
    x = torch.cat([ds.x[m] for m in ds.modalities], 1).double()
    return torch.cat([x.mean(2), x.std(2), x.amin(2), x.amax(2)], 1)


def logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3, max_iter: int = 500):
    """Multinomial logistic regression (features standardised with the training set's statistics); returns ``predict``."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mu) / sd
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: ((z - mu) / sd @ w + b).argmax(1).detach()


def accuracies(pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Top-1 and mean class accuracy."""
    correct = (pred == truth).double()
    per_class = [float(correct[truth == c].mean()) for c in torch.unique(truth)]
    return float(correct.mean()), float(np.mean(per_class))


def linear_reference(directions: Sequence[str] = DIRECTIONS, cache: str | None = None) -> list[dict[str, Any]]:
    """Source-only and target-trained logistic regression per direction, on the runs' test split."""
    from features.data.watch import CLASSES, load_watch, watch_splits

    torch.manual_seed(0)
    data = load_watch(cache)
    rows = []
    for direction in directions:
        source, target = arms(direction)
        cross, own = watch_splits(data, source, target), watch_splits(data, target, target)
        test = cross["test"]
        y_test = torch.from_numpy(test.labels)
        for name, train, split in (("source-only", cross["source"], cross), ("target-trained", own["source"], own)):
            predict = logistic_regression(window_features(train), torch.from_numpy(train.labels), len(CLASSES))
            # each model sees the test windows standardised with ITS training data's channel statistics
            top1, mca = accuracies(predict(window_features(split["test"])), y_test)
            rows.append(
                {
                    "direction": direction,
                    "model": name,
                    "top1": top1,
                    "mean_class_accuracy": mca,
                    "train_windows": len(train),
                    "test_windows": len(test),
                }
            )
    return rows


# ---------------------------------------------------------------------- tables
def _pm(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def results_table(results: Sequence[RunResult], reference: Sequence[dict[str, Any]] = ()) -> str:
    """Markdown: mean ± std (sample std over seeds) of target top-1 and mean-class accuracy in %."""
    directions = list(dict.fromkeys(r.direction for r in results)) or list(
        dict.fromkeys(r["direction"] for r in reference)
    )
    lines = [
        "| method | " + " | ".join(f"{d} top-1 % | {d} mean-class %" for d in directions) + " | seeds | wall s / run |",
        "|---|" + "---:|---:|" * len(directions) + "---:|---:|",
    ]
    for method in dict.fromkeys(r.method for r in results):
        cells, seeds, secs = [], set(), []
        for d in directions:
            rs = [r for r in results if r.method == method and r.direction == d]
            seeds |= {r.seed for r in rs}
            secs += [r.seconds for r in rs]
            cells += [_pm([r.top1 for r in rs]), _pm([r.mean_class_accuracy for r in rs])] if rs else ["-", "-"]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(seeds)} | {np.mean(secs):.0f} |")
    for model in dict.fromkeys(r["model"] for r in reference):
        cells = []
        for d in directions:
            rs = [r for r in reference if r["model"] == model and r["direction"] == d]
            cells += [f"{100 * rs[0]['top1']:.1f}", f"{100 * rs[0]['mean_class_accuracy']:.1f}"] if rs else ["-", "-"]
        lines.append(f"| linear {model} (reference) | " + " | ".join(cells) + " | - | - |")
    return "\n".join(lines)


def agents_table(results: Sequence[RunResult]) -> str:
    """Markdown: per direction and agent, mean ± std over seeds of the stage-2 removal rate and reward,
    and the relevance of kept and removed rows (mean over seeds)."""
    lines = [
        "| direction | agent | removal rate % | mean reward | relevance kept | relevance removed | kept < tau % | removed < tau % |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in dict.fromkeys(r.direction for r in results):
        rs = [r for r in results if r.direction == d and r.agents]
        for agent in dict.fromkeys(a for r in rs for a in r.agents):
            vals = [r.agents[agent] for r in rs if agent in r.agents]
            rewards = np.array([v["mean_reward"] for v in vals])
            rel = [r.relevance[agent] for r in rs if agent in r.relevance]
            cells = (
                [f"{np.mean([x[k] for x in rel]):.3f}" for k in ("kept_mean", "removed_mean")] if rel else ["-", "-"]
            )
            cells += (
                [f"{100 * np.mean([x[k] for x in rel]):.1f}" for k in ("kept_below_tau", "removed_below_tau")]
                if rel
                else ["-", "-"]
            )
            lines.append(
                f"| {d} | {agent} | {_pm([v['removal_rate'] for v in vals])} | "
                f"{rewards.mean():+.3f} ± {rewards.std(ddof=1) if len(rewards) > 1 else 0.0:.3f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def class_removal_table(results: Sequence[RunResult]) -> str:
    """Markdown: per direction and agent, the share of each class's windows removed (mean over seeds)."""
    from features.data.watch import CLASSES

    rs = [r for r in results if r.class_removal]
    if not rs:
        return ""
    lines = ["| direction | agent | " + " | ".join(CLASSES) + " |", "|---|---|" + "---:|" * len(CLASSES)]
    for d in dict.fromkeys(r.direction for r in rs):
        mine = [r for r in rs if r.direction == d]
        for agent in dict.fromkeys(a for r in mine for a in r.class_removal):
            mean = np.mean([r.class_removal[agent] for r in mine if agent in r.class_removal], axis=0)
            lines.append(f"| {d} | {agent} | " + " | ".join(f"{100 * v:.0f}" for v in mean) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.watch_benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Tables are printed as markdown and written with every run's numbers to OUT/results.json.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/watch-benchmark"),
        help="run folders and results.json (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--directions", default=",".join(DIRECTIONS), help="comma-separated (default: %(default)s)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated (default: %(default)s); other methods of experiments.methods (e.g. mmd, adabn, mcd) "
        "are applied to the source-only preset",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    add_set_option(p, "override a config value of every run (as `mmir train --set`), e.g. stage2.steps=50")
    p.add_argument("--reference-only", action="store_true", help="only the linear reference (seconds)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.config import parse_overrides

    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    directions = [d for d in args.directions.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    for d in directions:
        arms(d)
    unknown = [m for m in methods if m not in known_methods()]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {', '.join(known_methods())}", file=sys.stderr)
        return 2
    reference = linear_reference(directions)
    results: list[RunResult] = []
    if not args.reference_only:
        start = time.perf_counter()
        # CoTrainer pins each run's threads from its config: --threads is that key
        overrides = {"threads": max(1, args.threads), **parse_overrides(args.overrides)}
        results = run_benchmark(args.out, range(args.seeds), directions, methods, overrides)
        print(
            f"total wall time {time.perf_counter() - start:.0f} s ({os.environ.get('OMP_NUM_THREADS', '?')} OMP threads, torch {args.threads})"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            args.out / "results.json",
            json_text({"runs": [asdict(r) for r in results], "reference": reference}, indent=1),
        )
    print(results_table(results, reference))
    if any(r.agents for r in results):
        print()
        print(agents_table(results))
        table = class_removal_table(results)
        if table:
            print()
            print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
