"""Stage-2 step time with instance refinement vs adversarial-only (performance target: refinement stays small).

Same tiny two-stream model (the demo's), same batches, one run: the refinement overhead is
(t_MMIR - t_adv) / t_adv; also the share of a step spent waiting for data, and the loop's step
(``CoTrainer.training_step``) against the same step written out by hand. Also
what the refinement diagnostics cost (MMIR with them against MMIR with ``refinement.diagnostics =
false``) and the overhead of a refinement design (``--design METHOD``, default mmir-robust).

    python benchmarks/cotrain_step.py [--steps 100] [--workers 0] [--data-root DIR] [--design METHOD]
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

from experiments.cotrain import CoTrainer
from experiments.demo import apply_design, demo_config, ensure_demo_data
from experiments.methods import METHODS
from experiments.objectives.adversarial import adversarial_loss
from experiments.objectives.classification import classification_loss
from experiments.steps import StepBatch


class StepTimer:
    """One method's stage-2 steps on its own batch streams, timed step by step.

    ``hand_wired``: the step written out by hand as the loop was before it became composable parts
    (direct calls of the model, refiners, eq. 8 and the optimizers), the reference for what the
    CoTrainModule, objectives and step strategy cost.
    """

    def __init__(self, trainer: CoTrainer, hand_wired: bool = False) -> None:
        self.trainer, self.hand_wired = trainer, hand_wired
        trainer.begin_stage(2)
        self.compute: list[float] = []
        self.waiting: list[float] = []
        trainer.module.train()

    def step(self, record: bool) -> None:
        t = self.trainer
        t0 = time.perf_counter()
        batch = t.next_batch()
        t1 = time.perf_counter()
        if self.hand_wired:
            hand_wired_step(t, batch)
        else:
            t.training_step(batch)
        t2 = time.perf_counter()
        if record:
            self.waiting.append(t1 - t0)
            self.compute.append(t2 - t1)


def hand_wired_step(t: CoTrainer, batch: StepBatch) -> None:
    """The stage-2 step without the loop's parts: what the pre-refactor ``stage2_step`` did."""
    for opt in t.optimizers.values():
        opt.zero_grad(set_to_none=True)
    for r in t.refiners.values():
        for m in r.trainable_modules():
            m.zero_grad(set_to_none=True)
    f_src, f_tgt = t.module.extract(batch.source, batch.target)
    loss = classification_loss(t.model.classify(f_src).logits, batch.labels)
    for m in t.model.modalities:
        keep = {}
        for domain, feats, negative in (
            ("source", f_src[m], batch.source_negative),
            ("target", f_tgt[m], batch.target_negative),
        ):
            refiner = t.refiners.get((m, domain))
            if refiner is None:
                keep[domain] = torch.ones(feats.shape[0], dtype=torch.bool)
                continue
            result = refiner.refine(feats, negative)
            keep[domain] = result.keep
            if result.loss is not None:
                loss = loss + result.loss
        loss = loss + adversarial_loss(t.discriminators[m], f_src[m], f_tgt[m], keep["source"], keep["target"])
    loss.backward()
    for opt in t.optimizers.values():
        opt.step()
    for r in t.refiners.values():
        r.after_backward()


HAND_WIRED = "MMIR, hand-wired step (pre-refactor)"
NO_DIAGNOSTICS = "MMIR, diagnostics off"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per method (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument(
        "--design",
        default="mmir-robust",
        help="a refinement design of experiments.methods timed beside MMIR (default: %(default)s; 'none' skips it)",
    )
    args = parser.parse_args()
    if args.design != "none" and args.design not in METHODS:
        parser.error(f"--design {args.design!r} is not a method of experiments.methods; known: {', '.join(METHODS)}")
    console = Console()
    root = ensure_demo_data(0, args.data_root, console)
    timers = {}
    with tempfile.TemporaryDirectory() as out:
        variants = [
            ("adversarial-only", False, False, None),
            ("MMIR (adversarial + IR)", True, False, None),
            (HAND_WIRED, True, True, None),
            (NO_DIAGNOSTICS, True, False, None),
        ]
        if args.design != "none":
            variants.append((f"design {args.design}", True, False, args.design))
        for name, refinement, hand_wired, design in variants:
            cfg = demo_config(root, Path(out), 0, 1, args.steps)
            cfg.threads = 2  # the documented timings: 2 torch threads, as the demo
            cfg.stage2.refinement = refinement
            cfg.data.num_workers = args.workers
            cfg.refinement.diagnostics = name != NO_DIAGNOSTICS
            if design is not None:  # the design's refinement settings and epsilon, as the demo runs it
                apply_design(cfg, design)
            trainer = CoTrainer(cfg)
            timers[name] = StepTimer(trainer, hand_wired=hand_wired)
        # Interleaved, so that whatever else the machine does slows both methods alike.
        for i in range(args.steps + 5):
            for timer in timers.values():
                timer.step(record=i >= 5)
    results = {name: (float(np.median(t.compute)), float(np.median(t.waiting))) for name, t in timers.items()}
    table = Table(
        title=f"Stage-2 step on CPU ({torch.get_num_threads()} threads), demo model, batch 20 (10 + 10), {args.steps} steps"
    )
    for col in ("method", "compute s/step", "data wait s/step", "data share"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, (compute, wait) in results.items():
        table.add_row(name, f"{compute:.3f}", f"{wait:.3f}", f"{wait / (wait + compute):.0%}")
    console.print(table)
    adv, mmir = timers["adversarial-only"], timers["MMIR (adversarial + IR)"]
    print_overheads(console, "refinement", adv, mmir)
    plain = timers[NO_DIAGNOSTICS]
    print_overheads(console, "refinement without diagnostics", adv, plain)
    overhead, low, high = paired_overhead(np.asarray(plain.compute), np.asarray(mmir.compute))
    console.print(
        f"the refinement diagnostics (compute): {overhead:+.1f}% of the MMIR step without them "
        f"(95% bootstrap interval {low:+.1f}% .. {high:+.1f}%)"
    )
    if args.design != "none":
        print_overheads(console, args.design, adv, timers[f"design {args.design}"])
    hand = timers[HAND_WIRED]
    overhead, low, high = paired_overhead(np.asarray(hand.compute), np.asarray(mmir.compute))
    ratio = float(np.median(mmir.compute) / np.median(hand.compute))
    console.print(
        f"the loop's MMIR step / the hand-wired step (compute): {ratio:.3f} ({overhead:+.1f}%, 95% bootstrap "
        f"interval {low:+.1f}% .. {high:+.1f}%; target: not slower)"
    )


def print_overheads(console: Console, what: str, adv: StepTimer, other: StepTimer) -> None:
    """``other``'s overhead over the adversarial-only step, for the whole step and for compute only."""
    # The step a user waits for is data + compute (the demo loads in the main process); the compute
    # alone is the stricter view, because data loading dilutes any overhead.
    for label, adv_t, other_t in (
        ("whole step (data + compute)", np.add(adv.compute, adv.waiting), np.add(other.compute, other.waiting)),
        ("compute only", np.asarray(adv.compute), np.asarray(other.compute)),
    ):
        overhead, low, high = paired_overhead(adv_t, other_t)
        console.print(
            f"{what} overhead, {label}: {overhead:+.1f}% of the adversarial-only step "
            f"(95% bootstrap interval {low:+.1f}% .. {high:+.1f}%; target <= 3%)"
        )


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
