"""Issue 6 / DESIGN.md target 1: stage-2 step time with instance refinement vs adversarial-only.

Same tiny two-stream model (the demo's), same batches, one run: the refinement overhead is
(t_MMIR - t_adv) / t_adv. Also the share of a step spent waiting for data.

    python benchmarks/cotrain_step.py [--steps 100] [--workers 0] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from experiments.cotrain import CoTrainer, stage2_step
from experiments.demo import demo_config, ensure_demo_data


class StepTimer:
    """One method's stage-2 steps on its own batch streams, timed step by step."""

    def __init__(self, trainer: CoTrainer) -> None:
        self.trainer = trainer
        sc = trainer.cfg.stage2
        self.src, _ = trainer._loader("source", sc.batch_size // 2, 1)
        self.tgt, _ = trainer._loader("target", sc.batch_size // 2, 2)
        self.compute: list[float] = []
        self.waiting: list[float] = []
        trainer.model.train()

    def step(self, record: bool) -> None:
        t = self.trainer
        t0 = time.perf_counter()
        src, tgt = next(self.src), next(self.tgt)
        t1 = time.perf_counter()
        source = {m: src[m] for m in t.model.modalities}
        target = {m: tgt[m] for m in t.model.modalities}
        t.optimizer.zero_grad(set_to_none=True)
        for r in t.refiners.values():
            r.agent.optimizer.zero_grad(set_to_none=True)
        loss, _ = stage2_step(t.model, t.discriminators, t.refiners, source, src["label"], target,
                              adversarial=True, source_negative=src.get("is_negative"), target_negative=tgt.get("is_negative"))
        loss.backward()
        t.optimizer.step()
        for r in t.refiners.values():
            if len(r.agent.replay) >= r.agent.learning_starts:
                r.agent.optimizer_step()
        t2 = time.perf_counter()
        if record:
            self.waiting.append(t1 - t0)
            self.compute.append(t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per method (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    console = Console()
    root = ensure_demo_data(0, args.data_root, console)
    timers = {}
    with tempfile.TemporaryDirectory() as out:
        for name, refinement in (("adversarial-only", False), ("MMIR (adversarial + IR)", True)):
            cfg = demo_config(root, Path(out), 0, 1, args.steps)
            cfg.stage2.refinement = refinement
            cfg.data.num_workers = args.workers
            trainer = CoTrainer(cfg)
            trainer.stage, trainer.optimizer = 2, trainer._make_optimizer(2)
            timers[name] = StepTimer(trainer)
        # Interleaved, so that whatever else the machine does slows both methods alike.
        for i in range(args.steps + 5):
            for timer in timers.values():
                timer.step(record=i >= 5)
    results = {name: (float(np.median(t.compute)), float(np.median(t.waiting))) for name, t in timers.items()}
    table = Table(title=f"Stage-2 step on CPU ({torch.get_num_threads()} threads), demo model, batch 20 (10 + 10), {args.steps} steps")
    for col in ("method", "compute s/step", "data wait s/step", "data share"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, (compute, wait) in results.items():
        table.add_row(name, f"{compute:.3f}", f"{wait:.3f}", f"{wait / (wait + compute):.0%}")
    console.print(table)
    adv, mmir = timers["adversarial-only"], timers["MMIR (adversarial + IR)"]
    # The step a user waits for is data + compute (the demo loads in the main process); the compute
    # alone is the stricter view, because data loading dilutes any overhead.
    for label, adv_t, mmir_t in (
        ("whole step (data + compute)", np.add(adv.compute, adv.waiting), np.add(mmir.compute, mmir.waiting)),
        ("compute only", np.asarray(adv.compute), np.asarray(mmir.compute)),
    ):
        overhead, low, high = paired_overhead(adv_t, mmir_t)
        console.print(f"refinement overhead, {label}: {overhead:+.1f}% of the adversarial-only step "
                      f"(95% bootstrap interval {low:+.1f}% .. {high:+.1f}%; target <= 5%)")


def paired_overhead(adv_t: np.ndarray, mmir_t: np.ndarray) -> tuple[float, float, float]:
    """Median paired difference over the adversarial-only median, in %, with a 95% bootstrap interval.

    Steps run in interleaved pairs, so the per-pair difference cancels slow drifts of the machine;
    the bootstrap over pairs says how much the median would move with other draws of the noise.
    """
    diff = mmir_t - adv_t
    overhead = 100 * np.median(diff) / np.median(adv_t)
    rng = np.random.default_rng(0)
    boot = [100 * np.median(diff[i]) / np.median(adv_t[i]) for i in rng.integers(0, len(diff), (2000, len(diff)))]
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(overhead), float(low), float(high)


if __name__ == "__main__":
    main()
