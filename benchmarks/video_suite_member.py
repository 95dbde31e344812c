"""Can the demo's synthetic video domains join the refinement suite? Ground-truth removal against adversarial-only.

The suite keeps a geometry only where removing exactly the planted negatives gains at least 3
points of target top-1 over adversarial-only (otherwise there is nothing for refinement to
recover). The demo's video domains plant negatives (``SyntheticVideoConfig``: 10% of the training
clips), so they are a candidate member. This co-trains the demo's tiny two-stream I3D on the demo
data (data seed 0) with the demo's recipe, per training seed: one stage 1, then stage 2 with
adversarial alignment alone and with ``refinement.policy = "ground-truth"``; it prints the paired
difference with a bootstrap 95% interval and whether the data passes the filter.

One thread, about 3 minutes per seed on a laptop core; finished seeds in ``--out`` are reused.

    python benchmarks/video_suite_member.py --seeds 0-4 --out runs/video-suite-member
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from experiments.config import validate
from experiments.cotrain import CoTrainer
from experiments.demo import demo_config, ensure_demo_data
from features.atomic_io import atomic_write_text, json_text

GAIN_FILTER = 3.0  # points: the suite's membership threshold (docs/results-suite.md)
METHODS = {"adversarial-only": "none", "ground-truth-removal": "ground-truth"}


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,5"`` -> seeds."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-"))
            return list(range(low, high + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be A-B or comma-separated integers, got {text!r}") from None


def run_seed(root: Path, out: Path, seed: int, stage1: int, stage2: int) -> dict[str, float]:
    """Target top-1 (mean of the last evaluations, in %) of each method for one training seed."""
    seed_dir = out / f"seed{seed}"
    base = demo_config(root, seed_dir, seed, stage1, stage2)
    base.threads = 1
    trainer = CoTrainer(base)
    trainer.cfg.stage2.steps = 0  # stage 2 belongs to each method
    trainer.run()
    top1 = {}
    for method, policy in METHODS.items():
        cfg = demo_config(root, seed_dir, seed, stage1, stage2)
        cfg.threads, cfg.name, cfg.method = 1, method, method
        cfg.stage2.objectives = {"adversarial": 1.0}
        cfg.stage2.refinement = policy != "none"
        if cfg.stage2.refinement:
            cfg.refinement.policy = policy
        run = CoTrainer(validate(cfg))
        run.start_stage2_from(trainer.run_dir / "stage1.pt")
        top1[method] = 100 * run.run()["top1_last"]
    return top1


def paired_interval(diff: np.ndarray, draws: int = 10_000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of paired differences."""
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-4"), help="training seeds (default: 0-4)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and results.json")
    parser.add_argument("--stage1-steps", type=int, default=150, help="the demo's (default: %(default)s)")
    parser.add_argument("--stage2-steps", type=int, default=200, help="the demo's (default: %(default)s)")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds: an interval needs at least 2 seeds")
    torch.set_num_threads(1)
    console = Console()
    root = ensure_demo_data(0, console=console)
    results_path = args.out / "results.json"
    results: dict[str, dict[str, float]] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for seed in args.seeds:
        if str(seed) in results:
            continue
        start = time.perf_counter()
        results[str(seed)] = run_seed(root, args.out, seed, args.stage1_steps, args.stage2_steps)
        atomic_write_text(results_path, json_text(results, indent=1))
        r = results[str(seed)]
        console.print(
            f"seed {seed}: adversarial-only {r['adversarial-only']:.1f}%, ground truth {r['ground-truth-removal']:.1f}% "
            f"({time.perf_counter() - start:.0f} s)"
        )
    rows = [results[str(s)] for s in args.seeds]
    diff = np.array([r["ground-truth-removal"] - r["adversarial-only"] for r in rows])
    low, high = paired_interval(diff)
    member = diff.mean() >= GAIN_FILTER
    console.print(
        f"ground truth - adversarial-only over {len(rows)} seeds: {diff.mean():+.1f} points [{low:+.1f}, {high:+.1f}] "
        f"(adversarial-only {np.mean([r['adversarial-only'] for r in rows]):.1f}%); "
        f"{'a suite member' if member else 'not a suite member'} (filter: gain >= {GAIN_FILTER:.0f} points)"
    )
    return {"gain": float(diff.mean()), "low": low, "high": high, "member": bool(member)}


if __name__ == "__main__":
    main()
