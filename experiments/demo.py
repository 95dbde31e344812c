"""The main job: co-train tiny two-stream models on synthetic video domains with four methods.

Source-only, adversarial-only, MMIR (paper settings) and MMIR with the robust refinement design
(``mmir-robust``) share one stage 1 (L_cls on the source, eq. 11) and then run stage 2
each; the table has the layout of the paper's Table 3 plus the agents' precision and recall against
the planted negatives of the synthetic domains.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from experiments.config import RunConfig, validate
from experiments.cotrain import CoTrainer
from experiments.progress import progress_hook, training_progress
from features.atomic_io import atomic_directory, atomic_write_text, json_text
from features.cache import cache_dir

DEMO_DATA_VERSION = "v1"


@dataclass(frozen=True)
class DemoMethod:
    name: str
    adversarial: bool
    refinement: bool
    design: str = (
        ""  # a method of experiments.methods whose refinement settings (refinement.*, env.*, agents.epsilon) apply
    )
    label: str = ""  # its run's method label (default: the name, lower case)


METHODS = (
    DemoMethod("source-only", False, False),
    DemoMethod("adversarial-only", True, False),
    DemoMethod("MMIR", True, True),
    DemoMethod("MMIR robust", True, True, design="mmir-robust", label="mmir-robust"),
)


def design_overrides(design: str) -> dict[str, Any]:
    """The refinement settings of the method ``design`` (its other overrides name agents and switches the demo sets itself)."""
    from experiments.methods import get_method

    return {
        k: v
        for k, v in get_method(design).overrides.items()
        if k.startswith(("refinement.", "env.")) or k == "agents.epsilon"
    }


def apply_design(cfg: RunConfig, design: str) -> None:
    """Set :func:`design_overrides` of ``design`` on ``cfg`` in place (the caller validates)."""
    for key, value in design_overrides(design).items():
        section, _, field = key.partition(".")
        setattr(getattr(cfg, section), field, value)


def ensure_demo_data(seed: int = 0, root: Path | None = None, console: Console | None = None) -> Path:
    """The synthetic video domains of the demo, generated once into the cache (atomically)."""
    from features.data.synthetic_video import SyntheticVideoConfig, generate_video_domains

    root = root or cache_dir() / f"demo-video-{DEMO_DATA_VERSION}-seed{seed}"
    if (root / "T_test.csv").is_file():
        return root
    if console is not None:
        console.print(f"generating the synthetic video domains into {root} (once) ...")
    with atomic_directory(root) as tmp:  # replaces a partial folder from an interrupted run
        generate_video_domains(tmp, SyntheticVideoConfig(seed=seed))
    return root


def demo_config(data_root: Path, out_dir: Path, seed: int, stage1_steps: int, stage2_steps: int) -> RunConfig:
    """Tiny two-stream I3D (width 1/8, 32x32 crops, 16 frames) and the paper's stage-2 recipe scaled down."""
    cfg = RunConfig(name="stage1", output_dir=str(out_dir), seed=seed, device="cpu")
    cfg.data.root, cfg.data.source, cfg.data.target = str(data_root), "S", "T"
    cfg.data.size, cfg.data.num_workers = 32, 0
    cfg.model.width, cfg.model.num_classes = 0.125, 5
    cfg.stage1.steps, cfg.stage1.batch_size, cfg.stage1.lr = stage1_steps, 20, 0.01
    cfg.stage2.steps, cfg.stage2.batch_size, cfg.stage2.lr = stage2_steps, 20, 0.001
    cfg.agents.batch_size, cfg.agents.learning_starts = 16, 16
    cfg.evaluation.every = max(1, stage2_steps // 10)
    cfg.checkpoints.every = 10**9  # the demo keeps only the shared stage-1 checkpoint
    cfg.snapshots.enabled = False
    return validate(cfg)


def run_demo(
    out_dir: Path,
    seed: int = 0,
    stage1_steps: int = 150,
    stage2_steps: int = 200,
    console: Console | None = None,
    data_root: Path | None = None,
    snapshot: bool = True,
) -> list[dict[str, Any]]:
    """Run the demo's methods and return one row per method (also written to ``out_dir/results.json``)."""
    console = console or Console()
    threads = max(1, min(2, os.cpu_count() or 1))  # the demo's numbers were recorded at this count
    torch.set_num_threads(threads)
    root = ensure_demo_data(seed, data_root, console)
    base = demo_config(root, out_dir, seed, stage1_steps, stage2_steps)
    base.threads = threads
    rows: list[dict[str, Any]] = []
    with training_progress(console) as progress:
        stage1_task = progress.add_task("stage 1 (shared)", total=stage1_steps, info="")
        trainer = CoTrainer(base, on_step=progress_hook(progress, {1: stage1_task}))
        trainer.cfg.stage2.steps = 0  # stage 2 belongs to each method
        trainer.run()
        stage1_ckpt = trainer.run_dir / "stage1.pt"
        for method in METHODS:
            cfg = demo_config(root, out_dir, seed, stage1_steps, stage2_steps)
            cfg.threads = threads
            cfg.name, cfg.method = (
                method.name,
                method.label or method.name.lower(),
            )  # the method label of experiments.methods
            cfg.stage2.objectives = {"adversarial": 1.0} if method.adversarial else {}
            cfg.stage2.refinement = method.refinement
            if method.design:
                apply_design(cfg, method.design)
            cfg.snapshots.enabled = snapshot and method.refinement
            task = progress.add_task(f"stage 2: {method.name}", total=stage2_steps, info="")
            run = CoTrainer(validate(cfg), on_step=progress_hook(progress, {2: task}))
            run.start_stage2_from(stage1_ckpt)
            start = time.perf_counter()
            summary = run.run()
            rows.append(
                {
                    **summary,
                    "method": method.name,
                    "adversarial": method.adversarial,
                    "refinement": method.refinement,
                    "seconds": time.perf_counter() - start,
                    **agent_quality(run.run_dir / "metrics.jsonl", cfg.env.n_c / cfg.env.E),
                }
            )
    atomic_write_text(out_dir / "results.json", json_text(rows, indent=2))
    return rows


#: the refinement comparison of the demo: the controls and the bound beside MMIR (experiments/configs/feature-benchmark)
BENCHMARK_METHODS = (
    "adversarial-only",
    "mmir",
    "mmir-robust",
    "random-removal",
    "ground-truth-removal",
    "adversarial-only-clean",
)


def run_benchmark_part(
    out_dir: Path, seeds: int, overrides: dict[str, Any] | None = None, console: Console | None = None
) -> str:
    """The feature-level negative-transfer benchmark on ``seeds`` seeds (2 processes): the text of its comparison.

    It answers in a few minutes what the video part cannot resolve: whether refinement beats random
    removal at the same rate and how far it is from removing exactly the planted negatives.
    """
    from experiments.feature_benchmark import report_text, run_benchmark

    console = console or Console()
    log = (lambda text: None) if console.quiet else (lambda text: console.print(f"  {text}", highlight=False))
    console.print(
        f"feature-level negative-transfer benchmark: {len(BENCHMARK_METHODS)} methods x {seeds} seeds in 2 processes ..."
    )
    records = run_benchmark(
        out_dir / "feature-benchmark", list(range(seeds)), BENCHMARK_METHODS, overrides=overrides, workers=2, log=log
    )
    text = report_text(records)
    (out_dir / "feature-benchmark" / "demo-comparison.txt").write_text(text)
    return text


def agent_quality(metrics_path: Path, clips_per_removal: float) -> dict[str, float]:
    """Removal precision and recall against planted negatives over stage 2, all agents pooled.

    ``negative_share`` (negatives among the clips the agents saw) is a random agent's expected precision.
    """
    removed = negatives_removed = negatives_present = 0
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") != 2:
            continue
        removed += sum(v for k, v in record.items() if k.startswith("removed/"))
        negatives_removed += sum(v for k, v in record.items() if k.startswith("negatives_removed/"))
        negatives_present += sum(v for k, v in record.items() if k.startswith("negatives_present/"))
    if removed == 0:
        return {}
    return {
        "removal_precision": negatives_removed / removed,
        "removal_recall": negatives_removed / max(1, negatives_present),
        "negative_share": negatives_present / (removed * clips_per_removal),
    }


def demo_table(rows: list[dict[str, Any]], negative_share: float | None = None) -> Table:
    """Table 3's layout: method, adversarial, IR, target top-1 (mean of the last evaluations)."""
    table = Table(title="Synthetic video domains S -> T: tiny two-stream I3D co-trained on CPU (Table 3 layout)")
    # two-line headers keep the table whole in an 80-column terminal (CI logs, plain pipes)
    for col in (
        "method",
        "adv",
        "IR",
        "target\ntop-1 %",
        "mean class\nacc %",
        "agents'\nprecision %",
        "agents'\nrecall %",
    ):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
    best = max(r["top1_last"] for r in rows)
    for r in rows:
        top1 = f"{100 * r['top1_last']:.1f}"
        table.add_row(
            r["method"],
            "✓" if r["adversarial"] else "",
            "✓" if r["refinement"] else "",
            f"[bold]{top1}[/bold]" if r["top1_last"] == best else top1,
            f"{100 * r['mean_class_accuracy_last']:.1f}",
            f"{100 * r['removal_precision']:.1f}" if "removal_precision" in r else "-",
            f"{100 * r['removal_recall']:.1f}" if "removal_recall" in r else "-",
        )
    n = rows[0]["evaluations_averaged"] if rows else 0
    caption = "adv: adversarial alignment (GRL discriminators); IR: instance refinement (S- and T-agents). "
    caption += f"target top-1: mean of the last {n} evaluations on the whole target test split (5 windows per segment)"
    if negative_share is not None:
        caption += (
            f"; planted negatives are {negative_share:.1%} of training clips (a random agent's expected precision)"
        )
    table.caption = caption
    return table
