"""A grid of co-training runs (methods x domain pairs x seeds), sequential or in parallel processes, resumable.

Layout under the sweep folder::

    OUT/<pair>/_stage1/<key>-seed<k>/    stage 1, shared by every method whose stage 1 is the same
    OUT/<pair>/<method>/seed<k>/         one stage-2 run: config.json, metrics.jsonl, summary.json, ...

A run with a ``summary.json`` is done and skipped; one with a ``checkpoint.pt`` continues from it
(exactly, as ``mmir train --resume``); so an interrupted sweep is finished by running it again.
Methods share a stage 1 when their data, model and stage-1 settings agree (all of Table 1 except
the supervised upper bound, which trains on the target's labels from the start).

A *pair* is ``synthetic`` (the demo's generated video domains at the demo's size), a paper pair
such as ``D2-D1`` (``experiments/configs/paper/D2-D1.toml``, which needs ``--data-root``), or the path
of any run config (TOML), e.g. ``experiments/configs/watch/left-to-right/mmir.toml``; its folder is
named ``SOURCE-TARGET`` after the config's domains.
"""

from __future__ import annotations

import hashlib
import json
import queue as queue_module
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, RunConfig, from_dict, load_config, validate

PAPER_DIR = Path(__file__).parent / "configs" / "paper"
PAPER_PAIRS = ("D2-D1", "D3-D1", "D1-D2", "D3-D2", "D1-D3", "D2-D3")


@dataclass(frozen=True)
class SweepOptions:
    """What the grid is and how much each run trains (the synthetic pair's budget)."""

    out: Path
    methods: tuple[str, ...]
    pairs: tuple[str, ...]
    seeds: tuple[int, ...]
    data_root: str = ""
    stage1_steps: int = 150
    stage2_steps: int = 200
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Job:
    """One unit of work: a stage 1 (``method`` None) or a method's stage 2 (after its stage 1)."""

    kind: str  # "stage1" or "stage2"
    pair: str
    method: str
    seed: int
    config: dict[str, Any]
    stage1_dir: str

    @property
    def label(self) -> str:
        return f"{self.pair} {self.method if self.kind == 'stage2' else 'stage 1'} seed {self.seed}"


def pair_label(pair: str, cfg: RunConfig) -> str:
    """A folder name for a pair: ``synthetic``, else ``SOURCE-TARGET`` of its config (``D2-D1``, ``left-right``)."""
    return pair if pair == "synthetic" else f"{cfg.data.source}-{cfg.data.target}"


def base_config(pair: str, seed: int, options: SweepOptions) -> RunConfig:
    """The run config a pair token stands for, before a method is applied."""
    overrides = dict(options.overrides)
    if pair == "synthetic":
        from experiments.demo import demo_config, ensure_demo_data

        cfg = demo_config(ensure_demo_data(0), options.out, seed, options.stage1_steps, options.stage2_steps)
        cfg.checkpoints.every = 25  # resumable: a sweep can be stopped at any time
        data = cfg.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.rpartition(".")
            (data[section] if section else data)[key] = value
        return validate(from_dict(RunConfig, data))
    if pair in PAPER_PAIRS:
        path = PAPER_DIR / f"{pair}.toml"
        if options.data_root:
            overrides.setdefault("data.root", options.data_root)
    elif pair.endswith(".toml"):
        path = Path(pair)
    else:
        raise ConfigError(f"unknown pair {pair!r}: use 'synthetic', one of {', '.join(PAPER_PAIRS)}, or a config .toml path")
    overrides["seed"] = seed
    return load_config(path, overrides)


def stage1_key(cfg: RunConfig) -> str:
    """Hash of what stage 1 depends on (data, model, stage 1, seed): equal keys share one stage 1."""
    d = cfg.to_dict()
    relevant = {k: d[k] for k in ("seed", "data", "model", "stage1", "precision")}
    relevant["data"] = {k: v for k, v in relevant["data"].items() if k != "num_workers"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def plan(options: SweepOptions) -> tuple[list[Job], list[Job]]:
    """Stage-1 jobs and stage-2 jobs of the grid (each stage-2 job names its stage-1 folder)."""
    from experiments.methods import apply_method

    stage1: dict[str, Job] = {}
    stage2: list[Job] = []
    for pair in options.pairs:
        for seed in options.seeds:
            base = base_config(pair, seed, options)
            label = pair_label(pair, base)
            for method in options.methods:
                cfg = apply_method(base, method)
                key = stage1_key(cfg)
                s1_dir = options.out / label / "_stage1" / f"{key}-seed{seed}"
                if key not in stage1:
                    s1 = from_dict(RunConfig, cfg.to_dict())
                    s1.output_dir, s1.name = str(s1_dir.parent), s1_dir.name
                    s1.stage2.steps, s1.snapshots.enabled = 0, False
                    stage1[key] = Job("stage1", label, "stage1", seed, s1.to_dict(), str(s1_dir))
                cfg.output_dir, cfg.name = str(options.out / label / method), f"seed{seed}"
                stage2.append(Job("stage2", label, method, seed, cfg.to_dict(), str(s1_dir)))
    return list(stage1.values()), stage2


def is_done(job: Job) -> bool:
    run_dir = Path(job.stage1_dir) if job.kind == "stage1" else Path(job.config["output_dir"]) / job.config["name"]
    return (run_dir / ("stage1.pt" if job.kind == "stage1" else "summary.json")).is_file()


def execute(job: Job, on_step: Callable[[int, int, dict[str, float]], None] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run one job to completion (continuing from its checkpoint); returns its summary (stage 2) or ``{}``."""
    import torch

    from experiments.cotrain import CoTrainer

    if threads:
        torch.set_num_threads(threads)
    cfg = validate(from_dict(RunConfig, job.config))
    trainer = CoTrainer(cfg, on_step=on_step)
    checkpoint = trainer.run_dir / "checkpoint.pt"
    if job.kind == "stage1":
        trainer.run(resume=checkpoint.is_file())
        return {}
    if checkpoint.is_file():
        return trainer.run(resume=True)
    trainer.start_stage2_from(Path(job.stage1_dir) / "stage1.pt")
    return trainer.run()


def _worker(job: Job, events: Any, threads: int) -> dict[str, Any]:
    def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
        events.put((job.label, stage, step))

    return execute(job, on_step, threads)


def run_sweep(options: SweepOptions, jobs: int = 1, console: Any = None, threads: int = 0) -> list[Job]:
    """Run every unfinished job of the grid with ``jobs`` processes and one progress view; returns the stage-2 jobs.

    ``threads``: torch threads per process (0: as now for one job; this process's threads divided by
    ``jobs`` for several). More threads than
    free cores makes OpenMP's spinning workers wait for each other, which is many times slower.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = console or Console()
    stage1_jobs, stage2_jobs = plan(options)
    pending1 = [j for j in stage1_jobs if not is_done(j)]
    pending2 = [j for j in stage2_jobs if not is_done(j)]
    done_before = len(stage2_jobs) - len(pending2)
    console.print(f"sweep: {len(stage2_jobs)} runs ({done_before} already done), {len(pending1)} of {len(stage1_jobs)} shared stage-1 runs to do, "
                  f"{jobs} process(es) -> {options.out}")
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "sweep.json").write_text(json.dumps({
        "methods": options.methods, "pairs": options.pairs, "seeds": options.seeds, "data_root": options.data_root,
        "stage1_steps": options.stage1_steps, "stage2_steps": options.stage2_steps, "overrides": dict(options.overrides)}, indent=2))
    steps = {}  # job label -> total steps
    for j in pending1 + pending2:
        steps[j.label] = j.config["stage1"]["steps"] if j.kind == "stage1" else j.config["stage2"]["steps"]
    if not threads and jobs > 1:  # split this process's threads (OMP_NUM_THREADS or the core count) between the jobs
        import torch

        threads = max(1, torch.get_num_threads() // jobs)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=len(stage2_jobs), completed=done_before)
        tasks: dict[str, int] = {}

        def show(label: str, stage: int, step: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"  {label}", total=steps[label])
            progress.update(tasks[label], completed=step)

        def finish(job: Job) -> None:
            if job.label in tasks:
                progress.remove_task(tasks.pop(job.label))
            if job.kind == "stage2":
                progress.advance(overall)

        ready = [j for j in pending2 if is_done_stage1(j)]
        waiting = [j for j in pending2 if j not in ready]
        if jobs <= 1:
            for job in pending1 + waiting + ready:
                execute(job, lambda stage, step, _m, label=job.label: show(label, stage, step), threads)
                finish(job)
            return stage2_jobs
        ctx = get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            events = manager.Queue()
            running: dict[Future, Job] = {}
            todo = pending1 + ready
            while todo or running or waiting:
                while todo and len(running) < jobs:
                    job = todo.pop(0)
                    running[pool.submit(_worker, job, events, threads)] = job
                finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                try:
                    while True:
                        show(*events.get_nowait())
                except queue_module.Empty:
                    pass
                for future in finished:
                    job = running.pop(future)
                    future.result()  # a failed run stops the sweep with its error (finished runs stay done)
                    finish(job)
                    now_ready = [j for j in waiting if is_done_stage1(j)]
                    waiting = [j for j in waiting if j not in now_ready]
                    todo.extend(now_ready)
                if not running and not todo and waiting:
                    raise RuntimeError(f"stage-2 runs wait for stage-1 runs that are not planned: {[j.label for j in waiting]}")
                time.sleep(0.05)
    return stage2_jobs


def is_done_stage1(job: Job) -> bool:
    return (Path(job.stage1_dir) / "stage1.pt").is_file()
