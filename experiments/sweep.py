"""A grid of co-training runs (methods x domain pairs x seeds), sequential or in parallel processes, resumable.

Layout under the sweep folder::

    OUT/<pair>/_stage1/<key>-seed<k>/    stage 1, shared by every method whose stage 1 is the same
    OUT/<pair>/<method>/seed<k>/         one stage-2 run: config.json, metrics.jsonl, summary.json, ...

A run with a ``summary.json`` is done and skipped; one with a ``checkpoint.pt`` continues from it
(exactly, as ``mmir train --resume``); so an interrupted sweep is finished by running it again.
A run is keyed on its resolved config: one whose stored ``config.json`` differs from what the
sweep would run now (other ``--stage2-steps``, ``--set``, ...) is never counted as done; the sweep
refuses to start, listing those runs and keys, unless told to ``overwrite`` them. ``sweep.json``
records the grid, its settings and the hash of every run's resolved config.

Launchers: ``processes`` (this machine, ``jobs`` processes), ``slurm`` (one Slurm job per run through
submitit, stage-1 runs first, then the stage-2 runs) and ``submitit-local`` (the same submitit path
with its local executor: to try a cluster sweep on a workstation, and in the tests).
Methods share a stage 1 when their data, model and stage-1 settings agree (all of Table 1 except
the supervised upper bound, which trains on the target's labels from the start).

A *pair* is ``synthetic`` (the demo's generated video domains at the demo's size), a paper pair
such as ``D2-D1`` (``experiments/configs/paper/D2-D1.toml``, which needs ``--data-root``), or the path
of any run config (TOML), e.g. ``experiments/configs/watch/left-to-right/mmir.toml``; its folder is
named ``SOURCE-TARGET`` after the config's domains.

Model selection without target labels: runs trained with ``evaluation.validators`` record each
validator as ``val/NAME``; :func:`select_in_sweep` picks each pair's design by one of them and
names, beside it, the design target accuracy would have picked (the oracle of selection).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue as queue_module
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.config import ConfigError, RunConfig, from_dict, load_config, migrate_legacy, validate
from experiments.config_layers import Layers
from experiments.runs import RunLock, clear_run, config_differences
from features.atomic_io import atomic_write_text, folder_problem, json_text

if TYPE_CHECKING:
    from experiments.report import Selection

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
    tensorboard: bool = True  # event files in each run folder (RUN/tensorboard)
    overwrite: bool = False  # run again the runs whose stored config differs (else the sweep refuses to start)


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each job of ``--launcher slurm`` (submitit's names; ``partition`` empty: the cluster's default)."""

    partition: str = ""
    time_min: int = 240
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32.0
    array_parallelism: int = 64


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

    @property
    def run_dir(self) -> Path:
        return Path(self.stage1_dir) if self.kind == "stage1" else Path(self.config["output_dir"]) / self.config["name"]


def config_hash(config: dict[str, Any]) -> str:
    """What identifies a run's settings: a hash of its resolved config (where it lives left out)."""
    settings = {k: v for k, v in config.items() if k not in ("output_dir", "name")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def stored_differences(job: Job) -> list[str] | None:
    """How the config stored in the job's run folder differs from the job's (None: no run there yet).

    Stage-1 folders are named after the hash of what stage 1 depends on, so only that part counts for them.
    """
    path = job.run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["config.json: unreadable"]
    if job.kind == "stage1":
        try:
            same = stage1_key(from_dict(RunConfig, migrate_legacy(stored))) == stage1_key(
                from_dict(RunConfig, job.config)
            )
        except ConfigError:  # written by another version of mmir
            same = False
        return [] if same else ["stage-1 settings"]
    # threads say how a job ran (the share of cores it got), not what it trains
    return config_differences(stored, job.config, ignore=("output_dir", "name", "threads"))


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
        layers = Layers(data=cfg.to_dict())
        try:
            for dotted, value in overrides.items():
                layers.set(dotted, value, "--set")
            return validate(from_dict(RunConfig, layers.data))
        except ConfigError as err:
            named = [k for k in overrides if k in str(err) or k.partition(".")[0] in str(err)]
            raise ConfigError(
                f"--set {named[0]}={overrides[named[0]]!r} (pair synthetic): {err}" if named else str(err)
            ) from None
    if pair in PAPER_PAIRS:
        path = PAPER_DIR / f"{pair}.toml"
        if options.data_root:
            overrides.setdefault("data.root", options.data_root)
    elif pair.endswith(".toml"):
        path = Path(pair)
    else:
        raise ConfigError(
            f"unknown pair {pair!r}: use 'synthetic', one of {', '.join(PAPER_PAIRS)}, or a config .toml path"
        )
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
    """The job's run is finished with the job's settings (a run made with other settings is not done)."""
    if not (job.run_dir / ("stage1.pt" if job.kind == "stage1" else "summary.json")).is_file():
        return False
    return stored_differences(job) in ([], None) if job.kind == "stage1" else stored_differences(job) == []


def check_settings(options: SweepOptions, jobs: list[Job]) -> list[Job]:
    """Runs of ``jobs`` made (or begun) with other settings: refused, or with ``options.overwrite`` cleared and returned.

    :raises ConfigError: listing each such run and its changed keys (a changed setting is never "already done").
    """
    changed = [(job, diff) for job in jobs if (diff := stored_differences(job))]
    if changed and not options.overwrite:
        shown = "; ".join(
            f"{job.label} ({', '.join(diff[:4])}{', ...' if len(diff) > 4 else ''})" for job, diff in changed[:5]
        )
        more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ConfigError(
            f"{len(changed)} run(s) in {options.out} were made with other settings: {shown}{more}; "
            "use another --out, or --overwrite to run them again with these settings"
        )
    for job, _ in changed:
        clear_run(job.run_dir)
    return [job for job, _ in changed]


def write_sweep_json(options: SweepOptions, stage2_jobs: list[Job]) -> None:
    """``sweep.json``: the grid, its settings, and the config hash of each of its runs (what they were run with)."""
    atomic_write_text(
        options.out / "sweep.json",
        json_text(
            {
                "methods": options.methods,
                "pairs": options.pairs,
                "seeds": options.seeds,
                "data_root": options.data_root,
                "stage1_steps": options.stage1_steps,
                "stage2_steps": options.stage2_steps,
                "overrides": dict(options.overrides),
                "runs": {str(job.run_dir.relative_to(options.out)): config_hash(job.config) for job in stage2_jobs},
            },
            indent=2,
        ),
    )


def execute(
    job: Job,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    threads: int | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Run one job to completion (continuing from its checkpoint); returns its summary (stage 2) or ``{}``.

    ``tensorboard``: also write the run's metrics as TensorBoard events (RUN/tensorboard), when installed.
    """
    import torch

    from experiments.cotrain import CoTrainer
    from experiments.tensorboard_log import TensorBoardLog, tensorboard_available

    cfg = validate(from_dict(RunConfig, job.config))
    if threads:  # the process's share of the cores; CoTrainer pins it on CPU and config.json records it
        torch.set_num_threads(threads)
        cfg.threads = threads
    log = TensorBoardLog(cfg.run_dir(), cfg.stage1.steps) if tensorboard and tensorboard_available() else None
    if log is not None:
        shown = on_step

        def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
            log(stage, step, metrics)
            if shown is not None:
                shown(stage, step, metrics)

    try:
        trainer = CoTrainer(cfg, on_step=on_step)
        checkpoint = trainer.run_dir / "checkpoint.pt"
        if job.kind == "stage1":
            trainer.run(resume=checkpoint.is_file() or (trainer.run_dir / "stage1.pt").is_file())
            return {}
        if checkpoint.is_file():
            return trainer.run(resume=True)
        trainer.start_stage2_from(Path(job.stage1_dir) / "stage1.pt")
        return trainer.run()
    finally:
        if log is not None:
            log.close()


def _worker(job: Job, events: Any, threads: int, tensorboard: bool) -> dict[str, Any]:
    def on_step(stage: int, step: int, metrics: dict[str, float]) -> None:
        events.put((job.label, stage, step))

    return execute(job, on_step, threads, tensorboard)


def check_sweep(options: SweepOptions) -> None:
    """Everything a sweep can get wrong before it starts (the grid's configs, ``--out``), checked before ``--out`` is touched.

    :raises ConfigError: naming the pair, ``--set`` item or folder to fix.
    """
    problem = folder_problem(options.out)
    if problem is not None:
        raise ConfigError(f"--out {options.out}: {problem}; give --out a writable folder")
    plan(options)


def prepare_sweep(options: SweepOptions, console: Any) -> tuple[list[Job], list[Job], list[Job]]:
    """Plan the grid, refuse (or clear) runs made with other settings, write ``sweep.json``: (stage-1 todo, stage-2 todo, all stage 2)."""
    from experiments.tensorboard_log import INSTALL_HINT, tensorboard_available

    stage1_jobs, stage2_jobs = plan(options)
    check_settings(options, stage1_jobs + stage2_jobs)
    pending1 = [j for j in stage1_jobs if not is_done(j)]
    pending2 = [j for j in stage2_jobs if not is_done(j)]
    options.out.mkdir(parents=True, exist_ok=True)
    write_sweep_json(options, stage2_jobs)
    if options.tensorboard and not tensorboard_available():
        console.print(INSTALL_HINT, highlight=False)
    return pending1, pending2, stage2_jobs


def run_sweep(options: SweepOptions, jobs: int = 1, console: Any = None, threads: int = 0) -> list[Job]:
    """Run every unfinished job of the grid with ``jobs`` processes and one progress view; returns the stage-2 jobs.

    ``threads``: torch threads per process (0: as now for one job; this process's threads divided by
    ``jobs`` for several). More threads than
    free cores makes OpenMP's spinning workers wait for each other, which is many times slower.
    """
    from rich.console import Console

    console = console or Console()
    check_sweep(options)  # a bad pair or --set must leave no --out behind (not even its lock)
    with RunLock(options.out):  # one sweep at a time in a folder
        return _run_sweep(options, jobs, console, threads)


def _run_sweep(options: SweepOptions, jobs: int, console: Any, threads: int) -> list[Job]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    pending1, pending2, stage2_jobs = prepare_sweep(options, console)
    n_stage1 = len({j.stage1_dir for j in stage2_jobs})
    done_before = len(stage2_jobs) - len(pending2)
    console.print(
        f"sweep: {len(stage2_jobs)} runs ({done_before} already done), {len(pending1)} of {n_stage1} shared stage-1 runs to do, "
        f"{jobs} process(es) -> {options.out}"
    )
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
                execute(
                    job, lambda stage, step, _m, label=job.label: show(label, stage, step), threads, options.tensorboard
                )
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
                    running[pool.submit(_worker, job, events, threads, options.tensorboard)] = job
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
                    raise RuntimeError(
                        f"stage-2 runs wait for stage-1 runs that are not planned: {[j.label for j in waiting]}"
                    )
                time.sleep(0.05)
    return stage2_jobs


def is_done_stage1(job: Job) -> bool:
    return (Path(job.stage1_dir) / "stage1.pt").is_file()


LAUNCHERS = ("processes", "slurm", "submitit-local")


def make_executor(launcher: str, folder: Path, slurm: SlurmOptions) -> Any:
    """A submitit executor for ``launcher`` (``slurm`` or ``submitit-local``), its logs under ``folder``."""
    import shutil

    try:
        import submitit
    except ImportError:
        raise ConfigError(
            f"--launcher {launcher} needs submitit: pip install submitit (or the mmir[slurm] extra)"
        ) from None
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher slurm needs Slurm's sbatch on PATH, and this machine has none; "
            "--launcher submitit-local runs the same jobs here"
        )
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if launcher == "slurm" else "local")
    params: dict[str, Any] = {"name": "mmir-sweep", "timeout_min": slurm.time_min}
    if launcher == "slurm":
        params.update(
            gpus_per_node=slurm.gpus,
            cpus_per_task=slurm.cpus,
            mem_gb=slurm.mem_gb,
            tasks_per_node=1,
            nodes=1,
            slurm_array_parallelism=slurm.array_parallelism,
        )
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
    executor.update_parameters(**params)
    return executor


def _submitted_job(job: Job, threads: int, tensorboard: bool) -> dict[str, Any]:
    """What one submitit job runs (module-level: submitit pickles it by reference)."""
    return execute(job, None, threads, tensorboard)


def run_sweep_submitit(
    options: SweepOptions,
    launcher: str,
    jobs: int = 1,
    console: Any = None,
    threads: int = 0,
    slurm: SlurmOptions = SlurmOptions(),
) -> list[Job]:
    """Run every unfinished job of the grid as one submitit job each; returns the stage-2 jobs.

    The bookkeeping is :func:`run_sweep`'s (the same plan, settings check, ``sweep.json``, done runs
    skipped, interrupted ones resumed), so a sweep stopped at any point (this process, or a job
    killed by the cluster) is finished by running the same command again. The shared stage-1 runs
    go first, as one job array, then the stage-2 runs. ``jobs``: how many run at once (Slurm:
    ``slurm.array_parallelism`` unless given; local: ``jobs`` per batch). Logs: ``OUT/.submitit/``.
    """
    from rich.console import Console

    console = console or Console()
    check_sweep(options)
    with RunLock(options.out):
        pending1, pending2, stage2_jobs = prepare_sweep(options, console)
        console.print(
            f"sweep: {len(stage2_jobs)} runs ({len(stage2_jobs) - len(pending2)} already done), {len(pending1)} shared stage-1 "
            f"runs to do, as {launcher} jobs -> {options.out} (logs: {options.out / '.submitit'})"
        )
        if launcher == "slurm":
            threads = threads or slurm.cpus
            if jobs > 1:
                slurm = dataclasses.replace(slurm, array_parallelism=jobs)
        elif not threads:
            import torch

            threads = max(1, torch.get_num_threads() // max(1, jobs))
        executor = make_executor(launcher, options.out / ".submitit", slurm)
        batch = len(pending1 + pending2) if launcher == "slurm" else max(1, jobs)
        failed = _run_wave(executor, pending1, batch, threads, options.tensorboard, console)
        ready = [j for j in pending2 if is_done_stage1(j)]
        failed += _run_wave(executor, ready, batch, threads, options.tensorboard, console)
        blocked = [j.label for j in pending2 if j not in ready]
        if failed or blocked:
            raise SweepError(
                f"{len(failed)} job(s) failed: {'; '.join(failed)}"
                + (f"; not run (their stage 1 failed): {', '.join(blocked)}" if blocked else "")
                + "; finished runs stay done: run the same command again to retry the others"
            )
    return stage2_jobs


def check_selection(options: SweepOptions, validator: str) -> None:
    """``--select-by VALIDATOR`` names a registered validator (a plug-in's too) that the sweep's runs compute.

    :raises ConfigError: naming ``--select-by`` and the known validators, or the ``--set`` that makes the runs compute it.
    """
    from experiments.validators import VALIDATORS

    _, stage2 = plan(options)  # imports the configs' plug-ins, which may register validators
    if validator not in VALIDATORS:
        raise ConfigError(
            f"--select-by {validator!r} is not a known validator; choose one of {', '.join(VALIDATORS.names())}"
        )
    for job in stage2:
        computed = job.config.get("evaluation", {}).get("validators")
        if computed is not None and validator not in computed:
            raise ConfigError(
                f"--select-by {validator}: the runs do not compute it (evaluation.validators = {computed}); "
                f"add --set 'evaluation.validators=[\"{validator}\"]'"
            )


def select_in_sweep(jobs: list[Job], validator: str, metric: str = "top1") -> list[Selection]:
    """Each pair's design chosen by ``validator`` among the finished runs of ``jobs``, beside the oracle's
    (:class:`experiments.report.Selection`, one per pair).

    :raises ConfigError: no finished run of ``jobs`` recorded ``val/VALIDATOR``.
    """
    from experiments.report import find_runs, select_designs
    from experiments.validators import metric_name

    done = [job.run_dir for job in jobs if job.kind == "stage2" and (job.run_dir / "summary.json").is_file()]
    skipped: list[str] = []
    selections = select_designs(find_runs(done, skipped), validator, metric) if done else []
    if not selections:
        raise ConfigError(
            f"--select-by {validator}: no finished run of the sweep recorded {metric_name(validator)}; "
            f"run it with --set 'evaluation.validators=[\"{validator}\"]'"
        )
    return selections


class SweepError(RuntimeError):
    """Jobs of a sweep failed; the message names them and where their logs are."""


def _run_wave(executor: Any, todo: list[Job], batch: int, threads: int, tensorboard: bool, console: Any) -> list[str]:
    """Submit ``todo`` in batches of ``batch`` (one array each) and wait; returns what failed, with its log."""
    failed = []
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        with executor.batch():
            submitted = [executor.submit(_submitted_job, job, threads, tensorboard) for job in chunk]
        for job, sub in zip(chunk, submitted):
            try:
                sub.result()
            except Exception as err:  # submitit re-raises the job's error (or its own when a job was lost)
                failed.append(f"{job.label} ({type(err).__name__}; log {sub.paths.stderr})")
                continue
            console.print(f"done: {job.label} (job {sub.job_id})", highlight=False)
    return failed
