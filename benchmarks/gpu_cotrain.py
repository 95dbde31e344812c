"""Co-training at the paper's size on one GPU, measured side by side in one run.

On CUDA it measures, with the paper's recipe (``experiments/configs/paper/D2-D1.toml``):

1. **Stage-2 step, compute only** (clips already on the GPU): full-width two-stream I3D, 16 x 224 x 224,
   40 + 40 clips, four agents (an S- and a T-agent per modality), one ``CoTrainer.training_step`` of the loop:
   fp32 contiguous, fp32 ``channels_last_3d`` (the default), bf16 autocast, + ``cudnn.benchmark``,
   + ``torch.compile`` of the I3D trunks; peak memory; the same step under DistributedDataParallel
   (nccl, world size 1, in-process); refinement's share (MMIR vs adversarial-only, interleaved, and
   the refiners' own synchronised time); a stage-1 step (96 clips) and the evaluation forward.
2. **Data path**: clips/s of EPIC-layout JPEG frames (456 x 256, from the synthetic generator, read
   from the page cache) -> 224 training crops through the loop's loader
   (:func:`experiments.data_streams.stream_loader`) with N workers: ``data.decode = "cpu"`` against
   ``"gpu"`` (:meth:`features.data.epic.EpicClips.device_transform`: batched nvjpeg in the main
   process), against the step's appetite; and the pixels of nvjpeg against libjpeg-turbo.
3. **Projection of one EPIC pair** (4000 stage-1 steps at 96 clips, 8000 stage-2 steps at 80, the
   configured evaluations and end snapshot) from the measured rates, against the paper's 6 hours on
   4 RTX 3090s (24 GPU-hours) and the 1-hour goal.

``--smoke`` runs on CPU in a minute: tiny width, small frames, few steps, no bf16 / compile / nccl
(DDP on gloo instead); every path that needs no CUDA runs, and the tables have every row, with
"n/a (no CUDA)" where nothing can be measured. Smoke numbers describe the code path, not a GPU.

    python benchmarks/gpu_cotrain.py --smoke --out smoke.json            # CPU
    benchmarks/gpu_cotrain.sh WHEELS_DIR --out $OUT/gpu_cotrain.json      # GPU machine (docs/gpu.md)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, not an installed mmir

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from experiments.config import CONFIG_DIR, RunConfig, load_config, validate  # noqa: E402
from experiments.cotrain import CoTrainer  # noqa: E402
from experiments.data_streams import stream_loader  # noqa: E402
from experiments.evaluation.schedule import full_evaluation_steps, monitor_steps  # noqa: E402
from experiments.steps import StepBatch  # noqa: E402
from features.atomic_io import atomic_write_text  # noqa: E402
from features.data.epic import DecodeFallbackWarning, EpicClips  # noqa: E402

NA = "n/a (no CUDA)"
PAPER_GPU_HOURS = 24.0  # paper 4.1: 6 hours on 4 RTX 3090s
GOAL_HOURS = 1.0  # goal: one pair in under an hour on one H200
# Segments per MM-SADA split (rows of features/data/epic_splits/D*_{train,test}.csv)
EPIC_SEGMENTS = {"train": {"D1": 1543, "D2": 2495, "D3": 3897}, "test": {"D1": 435, "D2": 750, "D3": 974}}

# Every row the tables print, in order (tests/test_gpu_cotrain_script.py checks them all).
STEP_ROWS = (
    "fp32, contiguous",
    "fp32, channels_last_3d (default)",
    "bf16 autocast, channels_last_3d",
    "bf16, channels_last_3d, cudnn.benchmark",
    "bf16, channels_last_3d, torch.compile",
    "DDP world size 1",
    "adversarial-only (no agents)",
    "stage-1 step (L_cls)",
    "evaluation forward (no grad)",
    "refinement share: MMIR - adversarial-only",
    "refinement share: refiners' own time",
    "one forward of both halves (joint BatchNorm)",
)
DATA_ROWS = (
    "decode=cpu (loader workers)",
    "decode=gpu (nvjpeg, main process)",
    "decode=gpu via CPU fallback",
    "step appetite (fastest stage-2 step)",
    "nvjpeg vs libjpeg-turbo, rgb",
    "nvjpeg vs libjpeg-turbo, flow",
    "CPU fallback vs decode=cpu",
    "loop step fed by its loaders, decode=gpu, finished in front",
    "loop step fed by its loaders, decode=gpu, prefetched",
)
PROJECTION_ROWS = (
    "stage 1",
    "stage 2",
    "evaluations",
    "snapshot at the end",
    "one pair, compute only",
    "one pair, decode=cpu",
    "one pair, decode=gpu",
    "one pair, decode=gpu, prefetched",
    "paper: 6 h on 4 RTX 3090",
    "goal: one pair on one H200",
)
ALL_ROWS = STEP_ROWS + DATA_ROWS + PROJECTION_ROWS


# ---------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """What one mode measures: the paper's size on CUDA, a tiny stand-in in ``--smoke``."""

    width: float
    frames: int
    size: int
    frame_hw: tuple[int, int]  # generated JPEG frames (EPIC: 256 x 456)
    train_clips: int  # generated segments (repeated to fill the loaders)
    half: int  # stage-2 clips per domain
    stage1_batch: int
    eval_batch: int
    eval_batches: tuple[int, ...]  # evaluation batch sizes timed (the fastest is projected)
    steps: int  # timed steps per variant
    workers: tuple[int, ...]
    loader_batches: int
    agents_batch: int | None = None  # None: the paper preset's
    learning_starts: int | None = None


def full_sizes(cfg: RunConfig, args: argparse.Namespace) -> Sizes:
    cpus = os.cpu_count() or 1
    workers = args.workers or tuple(sorted({max(1, cpus // 4), max(1, cpus // 2), max(1, cpus - 2)}))
    return Sizes(
        width=1.0,
        frames=cfg.data.frames,
        size=cfg.data.size,
        frame_hw=(256, 456),
        train_clips=16,
        half=cfg.stage2.batch_size // 2,
        stage1_batch=cfg.stage1.batch_size,
        eval_batch=cfg.evaluation.batch_size,
        eval_batches=tuple(sorted({cfg.evaluation.batch_size, 32, 64, 128})),
        steps=args.steps,
        workers=workers,
        loader_batches=args.loader_batches,
    )


def smoke_sizes(args: argparse.Namespace) -> Sizes:
    return Sizes(
        width=0.0625,
        frames=8,
        size=24,
        frame_hw=(32, 40),
        train_clips=6,
        half=5,
        stage1_batch=6,
        eval_batch=4,
        eval_batches=(4, 8),
        steps=min(args.steps, 2),
        workers=args.workers or (0, 1),
        loader_batches=2,
        agents_batch=4,
        learning_starts=4,
    )


def paper_config() -> RunConfig:
    """The paper preset of D2 -> D1 (the recipe every pair shares)."""
    return load_config(CONFIG_DIR / "paper" / "D2-D1.toml")


def run_config(
    sizes: Sizes,
    device: torch.device,
    out_dir: Path,
    precision: str,
    refinement: bool = True,
    batchnorm: str = "per-domain",
) -> RunConfig:
    cfg = paper_config()
    cfg.model.batchnorm = batchnorm
    cfg.name, cfg.output_dir, cfg.device, cfg.precision = "gpu-cotrain", str(out_dir), str(device), precision
    cfg.data.size, cfg.data.frames, cfg.data.num_workers = sizes.size, sizes.frames, 0
    cfg.model.width = sizes.width
    cfg.stage1.batch_size, cfg.stage2.batch_size = sizes.stage1_batch, 2 * sizes.half
    cfg.stage2.refinement = refinement
    cfg.evaluation.batch_size = sizes.eval_batch
    if sizes.agents_batch is not None:
        cfg.agents.batch_size = sizes.agents_batch
    if sizes.learning_starts is not None:
        cfg.agents.learning_starts = sizes.learning_starts
    cfg.snapshots.enabled = False
    cfg.checkpoints.every = 10**9
    return validate(cfg)


def warmup_steps(cfg: RunConfig, half: int) -> int:
    """Untimed steps: until the agents' replay reaches ``learning_starts`` (they learn in every timed step), + 2."""
    sets_per_step = max(1, half // cfg.env.n_c) * cfg.env.E
    return math.ceil(cfg.agents.learning_starts / sets_per_step) + 2


# ---------------------------------------------------------------------- timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def failure(exc: BaseException) -> str:
    name = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
    return f"failed: {name}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


@dataclass
class Variant:
    """One way to run the stage-2 step."""

    name: str
    precision: str = "fp32"
    channels_last: bool = True
    cudnn_benchmark: bool = False
    compile: bool = False
    ddp: str | None = None  # process-group backend
    refinement: bool = True
    batchnorm: str = "per-domain"  # "joint": the source and target halves in one forward of the trunk


@dataclass
class Measured:
    seconds: list[float] = field(default_factory=list)
    peak_gib: float | None = None
    error: str | None = None
    clips: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {
            "s_per_step_median": self.median,
            "s_per_step": self.seconds,
            "clips_per_s": self.clips / self.median,
            "peak_gib": self.peak_gib,
            "clips": self.clips,
        }


def random_clips(
    n: int, sizes: Sizes, modalities: tuple[str, ...], device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """Clips in [-1, 1] on the device: the step's compute does not depend on the pixels."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    channels = {"rgb": 3, "flow": 2}
    return {
        m: (torch.rand(n, channels[m], sizes.frames, sizes.size, sizes.size, generator=g) * 2 - 1).to(device)
        for m in modalities
    }


class Stage2:
    """A CoTrainer at stage 2 with one fixed batch on the device; :meth:`step` is one timed loop step."""

    def __init__(
        self, variant: Variant, sizes: Sizes, device: torch.device, datasets: dict[str, Any], out_dir: Path
    ) -> None:
        torch.backends.cudnn.benchmark = variant.cudnn_benchmark  # global: each group sets its own
        self.variant, self.device = variant, device
        self.cfg = run_config(sizes, device, out_dir, variant.precision, variant.refinement, variant.batchnorm)
        self.trainer = CoTrainer(self.cfg, datasets=datasets)
        t = self.trainer
        for backbone in t.model.backbones.values():
            if not variant.channels_last:
                backbone.channels_last = False  # the I3D converts its input to this layout
                backbone.to(memory_format=torch.contiguous_format)
            if variant.compile:
                backbone._trunk = torch.compile(backbone._trunk)  # the convolutions; heads and agents stay eager
        # the loop wraps only under torchrun (WORLD_SIZE > 1); ddp=True wraps as it does, with its stage-2 settings
        t.begin_stage(2, ddp=variant.ddp)
        t.module.train()
        mods = tuple(t.model.modalities)
        g = torch.Generator().manual_seed(1)
        self.batch = StepBatch(
            random_clips(sizes.half, sizes, mods, device, 2),
            torch.randint(0, self.cfg.model.num_classes, (sizes.half,), generator=g).to(device),
            random_clips(sizes.half, sizes, mods, device, 3),
        )
        self.clips = 2 * sizes.half
        self.warmup = warmup_steps(self.cfg, sizes.half)

    def step(self) -> float:
        t = self.trainer
        sync(self.device)
        start = time.perf_counter()
        t.training_step(self.batch)
        sync(self.device)
        return time.perf_counter() - start


@contextlib.contextmanager
def process_group(backend: str | None, device: torch.device) -> Iterator[None]:
    """A one-process group (world size 1) in this process, for the DDP variant."""
    if not backend:
        yield
        return
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def measure_group(
    variants: list[Variant],
    sizes: Sizes,
    device: torch.device,
    datasets: dict[str, Any],
    out_dir: Path,
    console: Console,
) -> tuple[dict[str, Measured], list[float] | None]:
    """Build the group's trainers, warm each up, then time their steps interleaved (drifts hit all alike).

    Returns the timings and, for a pair of MMIR and adversarial-only, the refiners' own share of the
    MMIR step per extra step (:func:`refiner_share`).
    """
    results = {v.name: Measured() for v in variants}
    backends = {v.ddp for v in variants}
    assert len(backends) == 1, "one process group per group"

    def run() -> list[float] | None:  # its own frame: the trainers (GPU memory) go when it ends, raised or not
        with process_group(backends.pop(), device):
            runs = {v.name: Stage2(v, sizes, device, datasets, out_dir) for v in variants}
            for name, r in runs.items():
                for _ in range(r.warmup):
                    r.step()
                results[name].clips = r.clips
            for _ in range(sizes.steps):
                for name, r in runs.items():
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    results[name].seconds.append(r.step())
                    peak = peak_gib(device)
                    if peak is not None:
                        results[name].peak_gib = max(results[name].peak_gib or 0.0, peak)
            if len(variants) == 2 and variants[0].refinement and not variants[1].refinement:
                return refiner_share(runs[variants[0].name], sizes.steps)
            return None

    own: list[float] | None = None
    try:
        own = run()
    except Exception as exc:  # OOM or a compiler failure: report it in the table, measure the rest
        for m in results.values():
            if not m.seconds:
                m.error = failure(exc)
        console.print(f"[yellow]{', '.join(v.name for v in variants)}: {failure(exc)}[/]")
    free_memory(device)
    for name, r in results.items():
        if r.seconds:
            console.print(
                f"  {name}: {r.median:.3f} s/step, {r.clips / r.median:.1f} clips/s"
                + (f", peak {r.peak_gib:.1f} GiB" if r.peak_gib is not None else "")
            )
    return results, own


def refiner_share(run: Stage2, steps: int) -> list[float]:
    """Per extra step, the refiners' own time (their calls timed inside, synchronised) over the step's time.

    The refiners' TD loss joins the step's one backward, which this leaves out (the MMIR -
    adversarial-only difference includes it); the synchronisation adds a little to both.
    """
    spent = [0.0]

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            sync(run.device)
            start = time.perf_counter()
            out = fn(*a, **k)
            sync(run.device)
            spent[0] += time.perf_counter() - start
            return out

        return inner

    # The refiners act and learn together (refine_all -> AgentRefiner.refine_together, after_backward_all ->
    # AgentRefiner.after_backward_together), not through each one's refine() and after_backward(): time the
    # module's refine (an instance attribute, which the forward's self.refine picks up) and the loop's
    # after_backward_all (the name the loop calls).
    import experiments.cotrain as loop

    module, after_backward_all = run.trainer.module, loop.after_backward_all
    module.refine = timed(module.refine)
    loop.after_backward_all = timed(after_backward_all)
    shares = []
    try:
        for _ in range(steps):
            spent[0] = 0.0
            total = run.step()
            shares.append(spent[0] / total)
    finally:
        del module.refine
        loop.after_backward_all = after_backward_all
    return shares


def paired_share(mmir: list[float], adv: list[float]) -> tuple[float, float, float]:
    """(MMIR - adversarial-only) / MMIR of paired steps, median, with a 95% bootstrap interval."""
    import numpy as np

    m, a = np.asarray(mmir), np.asarray(adv)
    share = float(np.median(m - a) / np.median(m))
    rng = np.random.default_rng(0)
    boot = [np.median(m[i] - a[i]) / np.median(m[i]) for i in rng.integers(0, len(m), (2000, len(m)))]
    low, high = np.percentile(boot, [2.5, 97.5])
    return share, float(low), float(high)


def stage1_and_eval(
    sizes: Sizes,
    device: torch.device,
    datasets: dict[str, Any],
    out_dir: Path,
    precision: str,
    cudnn_benchmark: bool,
    console: Console,
    eval_rates: dict[int, float],
) -> tuple[Measured, Measured]:
    """A stage-1 step (L_cls on ``stage1.batch_size`` source clips) and the evaluation forward, as the loop runs them.

    The forward is timed at every batch size of ``sizes.eval_batches`` (clips/s into ``eval_rates``);
    the returned one is the fastest per clip.
    """
    step1, forward = Measured(), Measured()
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        _stage1_and_eval(step1, forward, sizes, device, datasets, out_dir, precision, eval_rates)
    except Exception as exc:
        for r in (step1, forward):
            if not r.seconds:
                r.error = failure(exc)
        console.print(f"[yellow]stage 1 / evaluation: {failure(exc)}[/]")
    free_memory(device)  # after the measuring frame is gone, with its trainer
    return step1, forward


def _stage1_and_eval(
    step1: Measured,
    forward: Measured,
    sizes: Sizes,
    device: torch.device,
    datasets: dict[str, Any],
    out_dir: Path,
    precision: str,
    eval_rates: dict[int, float],
) -> None:
    """The measuring frame of :func:`stage1_and_eval` (its trainer is freed when it ends, raised or not)."""
    cfg = run_config(sizes, device, out_dir, precision)
    t = CoTrainer(cfg, datasets=datasets)
    t.module.train()
    mods = tuple(t.model.modalities)
    clips = random_clips(sizes.stage1_batch, sizes, mods, device, 4)
    labels = torch.randint(0, cfg.model.num_classes, (sizes.stage1_batch,)).to(device)

    stage1_batch = StepBatch(clips, labels)

    def one_step() -> float:  # one stage-1 step of the loop
        sync(device)
        start = time.perf_counter()
        t.training_step(stage1_batch)
        sync(device)
        return time.perf_counter() - start

    for _ in range(2):
        one_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step1.seconds = [one_step() for _ in range(sizes.steps)]
    step1.peak_gib, step1.clips = peak_gib(device), sizes.stage1_batch
    clips = stage1_batch = None  # free the stage-1 clips before the evaluation batch
    t.model.eval()
    # the evaluation forward at each batch size: the fastest per clip is the one to configure
    for size in sizes.eval_batches:
        batch = random_clips(size, sizes, mods, device, 5)

        def one_forward() -> float:  # what experiments.evaluation.evaluate runs per batch
            sync(device)
            start = time.perf_counter()
            with torch.no_grad(), t.autocast():
                torch.softmax(t.model(batch).logits.float(), dim=1)
            sync(device)
            return time.perf_counter() - start

        for _ in range(2):
            one_forward()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = [one_forward() for _ in range(max(3, sizes.steps))]
        rate = size / statistics.median(seconds)
        eval_rates[size] = rate
        if not forward.seconds or rate > forward.clips / forward.median:
            forward.seconds, forward.peak_gib, forward.clips = seconds, peak_gib(device), size
        batch = None


# ---------------------------------------------------------------------- data path
def loader_rate(ds: EpicClips, batch: int, workers: int, batches: int, device: torch.device) -> dict[str, float]:
    """Clips/s through the loop's loader (+ ``device_transform`` for decode="gpu"), start-up excluded."""
    it, _ = stream_loader(
        ds, batch, seed=0, stream=1, position=None, num_workers=workers, pin_memory=device.type == "cuda"
    )
    mods = ds.modalities

    def finish(b: dict[str, Any]) -> float:
        start = time.perf_counter()
        out = ds.device_transform(b, device)  # what CoTrainer._clips calls
        for m in mods:
            out[m] = out[m].to(device, non_blocking=True)
        sync(device)
        return time.perf_counter() - start

    finish(next(it))  # workers start, first batch
    start, in_main = time.perf_counter(), 0.0
    for _ in range(batches):
        in_main += finish(next(it))
    total = time.perf_counter() - start
    del it  # persistent workers shut down with their iterator
    return {
        "clips_per_s": batch * batches / total,
        "main_process_s_per_clip": in_main / (batch * batches),
        "workers": workers,
    }


def pixel_difference(cpu: EpicClips, gpu: EpicClips, device: torch.device, items: int) -> dict[str, dict[str, float]]:
    """Grey levels between decode="gpu" on ``device`` and decode="cpu" clips of the same items."""
    from torch.utils.data import default_collate

    n = min(items, len(cpu))
    ref = default_collate([cpu[i] for i in range(n)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecodeFallbackWarning)
        out = gpu.device_transform(default_collate([gpu[i] for i in range(n)]), device)
    diff = {}
    for m in cpu.modalities:
        levels = (out[m].float().cpu() - ref[m]).abs() * 127.5
        diff[m] = {
            "max": float(levels.max()),
            "mean": float(levels.mean()),
            "p99_9": float(torch.quantile(levels.flatten()[:: max(1, levels.numel() // 1_000_000)], 0.999)),
        }
    return diff


def data_path(root: Path, sizes: Sizes, device: torch.device, smoke: bool, console: Console) -> dict[str, Any]:
    segments = EpicClips(root, "S", "train").segments
    repeat = math.ceil(sizes.half * (sizes.loader_batches + 2) / len(segments))
    common = dict(size=sizes.size, num_frames=sizes.frames, seed=0, segments=segments * repeat)
    cpu = EpicClips(root, "S", "train", decode="cpu", **common)
    gpu = EpicClips(root, "S", "train", decode="gpu", **common)
    out: dict[str, Any] = {"cpu": [], "gpu": [], "fallback": None, "nvjpeg_difference": None}
    for n in sizes.workers:
        r = loader_rate(cpu, sizes.half, n, sizes.loader_batches, device)
        out["cpu"].append(r)
        console.print(f"  decode=cpu, {n} workers: {r['clips_per_s']:.1f} clips/s")
    if device.type == "cuda":
        for n in sorted({min(sizes.workers), max(sizes.workers)}):
            try:
                r = loader_rate(gpu, sizes.half, n, sizes.loader_batches, device)
            except Exception as exc:
                r = {"workers": n, "error": failure(exc)}
                console.print(f"[yellow]decode=gpu, {n} workers: {r['error']}[/]")
            else:
                console.print(
                    f"  decode=gpu, {n} workers: {r['clips_per_s']:.1f} clips/s "
                    f"({1e3 * r['main_process_s_per_clip']:.2f} ms/clip in the main process)"
                )
            out["gpu"].append(r)
        try:
            out["nvjpeg_difference"] = pixel_difference(cpu, gpu, device, 8)
        except Exception as exc:
            out["nvjpeg_difference"] = {"error": failure(exc)}
    else:  # the fallback is decode="gpu"'s only path here: time it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecodeFallbackWarning)
            out["fallback_rate"] = loader_rate(gpu, sizes.half, min(sizes.workers), sizes.loader_batches, device)
    if device.type == "cuda":
        from features.data import epic

        out["fallback_warnings"] = sorted(epic._warned)  # decode="gpu" on CUDA that did not use nvjpeg, if any
    out["fallback"] = pixel_difference(cpu, gpu, torch.device("cpu"), 4 if not smoke else 2)
    return out


def fed_steps(
    root: Path, sizes: Sizes, device: torch.device, precision: str, out_dir: Path, console: Console
) -> dict[str, Any]:
    """Stage-2 loop steps fed by the loop's own loaders (``decode="gpu"``): the batch finished in front of
    each step (``data.prefetch = "off"``) against finished in a thread on a side stream while the step runs.

    Not interleaved: a prefetch thread would decode during the other trainer's step. Each step is
    ``next_batch`` + ``training_step`` to a device synchronisation.
    """
    segments = EpicClips(root, "S", "train").segments
    repeat = math.ceil(sizes.half * (sizes.steps + 16) / len(segments))
    workers = max(sizes.workers)
    out: dict[str, Any] = {"workers": workers}
    for prefetch in ("off", "on"):
        ds = EpicClips(
            root,
            "S",
            "train",
            decode="gpu",
            size=sizes.size,
            num_frames=sizes.frames,
            seed=0,
            segments=segments * repeat,
        )
        cfg = run_config(sizes, device, out_dir, precision)
        cfg.data.decode, cfg.data.prefetch, cfg.data.num_workers = "gpu", prefetch, workers
        measured = Measured(clips=2 * sizes.half)
        trainer = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DecodeFallbackWarning)  # smoke: decode="gpu" on the CPU
                trainer = CoTrainer(validate(cfg), datasets={"source": ds, "target": ds, "test": ds})
                trainer.begin_stage(2)
                trainer.module.train()
                for _ in range(warmup_steps(cfg, sizes.half)):
                    trainer.training_step(trainer.next_batch())
                for _ in range(sizes.steps):
                    sync(device)
                    start = time.perf_counter()
                    trainer.training_step(trainer.next_batch())
                    sync(device)
                    measured.seconds.append(time.perf_counter() - start)
        except Exception as exc:
            measured.error = failure(exc)
            console.print(f"[yellow]loop step fed by its loaders, prefetch {prefetch}: {measured.error}[/]")
        finally:
            if trainer is not None:
                trainer.close()
            del trainer
            free_memory(device)
        out[prefetch] = {**measured.as_dict(), "variant": f"{precision}, channels_last_3d, {workers} workers"}
        if measured.seconds:
            console.print(f"  fed by its loaders, prefetch {prefetch}: {measured.median:.3f} s/step")
    return out


# ---------------------------------------------------------------------- projection
def evaluation_count(cfg: RunConfig) -> tuple[int, int]:
    """``(full evaluations, monitors)`` of stage 2, as ``CoTrainer.evaluation_steps`` schedules them."""
    e = cfg.evaluation
    full = full_evaluation_steps(cfg.stage2.steps, e.every, e.last, e.schedule)
    monitors = monitor_steps(cfg.stage2.steps, e.monitor_every, full) if e.schedule == "protocol" else []
    return len(full), len(monitors)


def evaluation_clips(cfg: RunConfig) -> int:
    """Test clips the evaluations of one pair forward: full passes over the test split and the monitors' subsample."""
    full, monitors = evaluation_count(cfg)
    test_windows = EPIC_SEGMENTS["test"][cfg.data.target] * cfg.evaluation.windows
    return full * test_windows + monitors * min(cfg.evaluation.monitor_windows, test_windows)


def project(
    cfg: RunConfig,
    step1_s: float,
    step2_s: float,
    forward_clips_s: float,
    loader_cpu_clips_s: float,
    gpu_decode_s_per_clip: float | None,
    prefetched_step_factor: float | None = None,
) -> dict[str, Any]:
    """Hours of one pair (``cfg``'s recipe and domains) from per-step times and per-clip rates.

    decode="cpu" overlaps with compute (workers prefetch): a step takes max(compute, batch / loader).
    decode="gpu" runs in the main process before each step: compute + batch x its time per clip; the
    evaluations decode the same way (forward + decode per clip). With decode="cpu" the evaluations,
    and the snapshot in either mode, are bounded by the slower of the forward and the loader.
    ``prefetched_step_factor`` (a loop step fed by its loaders with the batch prefetched, over the
    compute-only step of the same variant, both measured) scales the training steps of
    decode="gpu" with prefetching; its evaluations are those of decode="gpu".
    """
    s1, b1, s2, b2 = cfg.stage1.steps, cfg.stage1.batch_size, cfg.stage2.steps, cfg.stage2.batch_size
    eval_clips = evaluation_clips(cfg)
    full_evaluations, monitors = evaluation_count(cfg)
    snapshots = (
        (1 if cfg.snapshots.every == 0 else cfg.stage2.steps // cfg.snapshots.every) if cfg.snapshots.enabled else 0
    )
    snap_clips = snapshots * (EPIC_SEGMENTS["train"][cfg.data.source] + EPIC_SEGMENTS["train"][cfg.data.target])
    read_rate = min(forward_clips_s, loader_cpu_clips_s)
    out = {
        "pair": f"{cfg.data.source}->{cfg.data.target}",
        "evaluations": full_evaluations,
        "monitors": monitors,
        "evaluation_clips": eval_clips,
        "snapshot_clips": snap_clips,
        "stage1_compute_h": s1 * step1_s / 3600,
        "stage2_compute_h": s2 * step2_s / 3600,
        "stage1_cpu_decode_h": s1 * max(step1_s, b1 / loader_cpu_clips_s) / 3600,
        "stage2_cpu_decode_h": s2 * max(step2_s, b2 / loader_cpu_clips_s) / 3600,
        "evaluations_h": eval_clips / read_rate / 3600,
        "evaluations_compute_h": eval_clips / forward_clips_s / 3600,
        "snapshot_h": snap_clips / read_rate / 3600,
        "snapshot_compute_h": snap_clips / forward_clips_s / 3600,
    }
    out["total_compute_h"] = (
        out["stage1_compute_h"] + out["stage2_compute_h"] + out["evaluations_compute_h"] + out["snapshot_compute_h"]
    )
    rest = out["evaluations_h"] + out["snapshot_h"]
    out["total_cpu_decode_h"] = out["stage1_cpu_decode_h"] + out["stage2_cpu_decode_h"] + rest
    if gpu_decode_s_per_clip is not None:
        out["stage1_gpu_decode_h"] = s1 * (step1_s + b1 * gpu_decode_s_per_clip) / 3600
        out["stage2_gpu_decode_h"] = s2 * (step2_s + b2 * gpu_decode_s_per_clip) / 3600
        out["evaluations_gpu_decode_h"] = eval_clips * (1 / forward_clips_s + gpu_decode_s_per_clip) / 3600
        out["total_gpu_decode_h"] = (
            out["stage1_gpu_decode_h"]
            + out["stage2_gpu_decode_h"]
            + out["evaluations_gpu_decode_h"]
            + out["snapshot_h"]
        )
        out["evaluations_share_gpu_decode"] = out["evaluations_gpu_decode_h"] / out["total_gpu_decode_h"]
        if prefetched_step_factor is not None:
            out["prefetched_step_factor"] = prefetched_step_factor
            out["total_gpu_decode_prefetched_h"] = (
                (out["stage1_compute_h"] + out["stage2_compute_h"]) * prefetched_step_factor
                + out["evaluations_gpu_decode_h"]
                + out["snapshot_h"]
            )
    return out


# ---------------------------------------------------------------------- tables
def fmt(value: float | None, spec: str = ".3f") -> str:
    return NA if value is None else format(value, spec)


def step_table(results: dict[str, Any], smoke: bool) -> Table:
    title = "stage-2 step, compute only (clips on the device)" + (
        " -- CPU SMOKE, tiny model: not GPU numbers" if smoke else ""
    )
    table = Table(title=title)
    for col in ("step", "variant", "s/step", "clips/s", "peak GiB", "vs fp32 channels_last_3d"):
        table.add_column(col, justify="left" if col in ("step", "variant") else "right")
    steps = results["steps"]
    base = steps.get(STEP_ROWS[1], {}).get("s_per_step_median")
    for name in STEP_ROWS[:9]:
        r = steps.get(name, {"error": NA})
        variant = r.get("variant", "")
        if "error" in r:
            table.add_row(name, variant, r["error"], "", "", "")
            continue
        s = r["s_per_step_median"]
        table.add_row(
            name,
            variant,
            f"{s:.3f}",
            f"{r['clips_per_s']:.1f}",
            fmt(r.get("peak_gib"), ".1f"),
            f"{base / s:.2f}x" if base and name in STEP_ROWS[:7] else "",
        )
    share = results.get("refinement_share")
    if share:
        table.add_row(
            STEP_ROWS[9],
            share["variant"],
            f"{100 * share['share']:+.1f}%",
            f"95% CI {100 * share['low']:+.1f}% .. {100 * share['high']:+.1f}%",
            "",
            "goal <= 2%",
        )
    else:
        table.add_row(STEP_ROWS[9], "", NA, "", "", "goal <= 2%")
    own = results.get("refiners_own")
    table.add_row(
        STEP_ROWS[10],
        own["variant"] if own else "",
        f"{100 * own['share']:.1f}%" if own else NA,
        "",
        "",
        "synchronised calls; TD loss's backward not included",
    )
    return table


def data_table(results: dict[str, Any], smoke: bool) -> Table:
    title = "data path: EPIC-layout JPEGs -> training clips" + (" -- CPU SMOKE: tiny frames" if smoke else "")
    table = Table(title=title)
    for col in ("path", "workers", "clips/s", "vs step appetite", "note"):
        table.add_column(col, justify="left" if col in ("path", "note") else "right")
    data, appetite = results.get("data", {}), results.get("appetite_clips_per_s")

    def vs(rate: float) -> str:
        return f"{rate / appetite:.2f}x" if appetite else ""

    for r in data.get("cpu", []):
        table.add_row(
            DATA_ROWS[0],
            str(r["workers"]),
            f"{r['clips_per_s']:.1f}",
            vs(r["clips_per_s"]),
            "decoded in workers, overlaps the step",
        )
    for r in data.get("gpu", []) or [{"workers": "", "error": NA}]:
        if "error" in r:
            table.add_row(DATA_ROWS[1], str(r["workers"]), r["error"], "", "")
        else:
            fell_back = data.get("fallback_warnings")
            table.add_row(
                DATA_ROWS[1],
                str(r["workers"]),
                f"{r['clips_per_s']:.1f}",
                vs(r["clips_per_s"]),
                f"FELL BACK TO CPU: {fell_back[0][:80]}"
                if fell_back
                else f"{1e3 * r['main_process_s_per_clip']:.2f} ms/clip serial with the step",
            )
    fb = data.get("fallback_rate")
    table.add_row(
        DATA_ROWS[2],
        str(fb["workers"]) if fb else "",
        f"{fb['clips_per_s']:.1f}" if fb else "not run on CUDA",
        "",
        "decode='gpu' without CUDA: simplejpeg in the main process",
    )
    table.add_row(
        DATA_ROWS[3],
        "",
        f"{appetite:.1f}" if appetite else NA,
        "1.00x" if appetite else "",
        results.get("appetite_variant", ""),
    )
    diff = data.get("nvjpeg_difference")
    for row, m in ((DATA_ROWS[4], "rgb"), (DATA_ROWS[5], "flow")):
        if not diff:
            table.add_row(row, "", NA, "", "grey levels")
        elif "error" in diff:
            table.add_row(row, "", diff["error"], "", "")
        else:
            d = diff[m]
            table.add_row(
                row,
                "",
                f"max {d['max']:.0f}",
                "",
                f"mean {d['mean']:.2f}, 99.9% {d['p99_9']:.0f} grey levels (incl. float resize)",
            )
    fb = data.get("fallback")
    worst = max(v["max"] for v in fb.values()) if fb else None
    table.add_row(DATA_ROWS[6], "", f"max {worst:.0f}" if fb else NA, "", "grey levels; same decoder, so 0")
    fed = results.get("fed", {})
    for row, key in ((DATA_ROWS[7], "off"), (DATA_ROWS[8], "on")):
        r = fed.get(key, {"error": "not run"})
        if "error" in r:
            table.add_row(row, str(fed.get("workers", "")), r["error"], "", "")
        else:
            table.add_row(
                row,
                str(fed["workers"]),
                f"{r['clips_per_s']:.1f}",
                vs(r["clips_per_s"]),
                f"{r['s_per_step_median']:.3f} s/step, {r['variant']}",
            )
    return table


def projection_table(results: dict[str, Any], smoke: bool) -> Table:
    p = None if smoke else results.get("projection")
    pair = p["pair"] if p else "D2->D1"
    table = Table(title=f"projection: one EPIC pair ({pair}, the paper's recipe) on this GPU")
    for col in ("part", "hours", "note"):
        table.add_column(col, justify="right" if col == "hours" else "left")
    if not p:
        for row in PROJECTION_ROWS[:8]:
            table.add_row(row, NA, "")
    else:
        cfg = paper_config()
        table.add_row(
            PROJECTION_ROWS[0],
            f"{p['stage1_compute_h']:.2f}",
            f"{cfg.stage1.steps} steps x {cfg.stage1.batch_size} clips, compute; "
            f"{p['stage1_cpu_decode_h']:.2f} h with decode=cpu",
        )
        table.add_row(
            PROJECTION_ROWS[1],
            f"{p['stage2_compute_h']:.2f}",
            f"{cfg.stage2.steps} steps x {cfg.stage2.batch_size} clips, compute; "
            f"{p['stage2_cpu_decode_h']:.2f} h with decode=cpu",
        )
        table.add_row(
            PROJECTION_ROWS[2],
            f"{p['evaluations_h']:.2f}",
            f"{p['evaluations']} full test passes + {p.get('monitors', 0)} monitors: {p['evaluation_clips']} clips, "
            f"decode=cpu; {fmt(p.get('evaluations_gpu_decode_h'), '.2f')} h with decode=gpu"
            f" ({fmt(p.get('evaluations_share_gpu_decode'), '.1%')} of the pair)",
        )
        table.add_row(PROJECTION_ROWS[3], f"{p['snapshot_h']:.2f}", f"{p['snapshot_clips']} clips")
        table.add_row(PROJECTION_ROWS[4], f"{p['total_compute_h']:.2f}", "no data bound")
        fastest = max(results["data"]["cpu"], key=lambda r: r["clips_per_s"])
        table.add_row(
            PROJECTION_ROWS[5],
            f"{p['total_cpu_decode_h']:.2f}",
            f"{fastest['workers']} loader workers ({fastest['clips_per_s']:.0f} clips/s)",
        )
        table.add_row(
            PROJECTION_ROWS[6],
            fmt(p.get("total_gpu_decode_h"), ".2f"),
            "nvjpeg in the main process, serial with the step",
        )
        table.add_row(
            PROJECTION_ROWS[7],
            fmt(p.get("total_gpu_decode_prefetched_h"), ".2f"),
            f"training steps x {fmt(p.get('prefetched_step_factor'), '.2f')} (loop step fed by its loaders, "
            "prefetched, over the compute-only step); evaluations as above",
        )
    table.add_row(
        PROJECTION_ROWS[8], f"{PAPER_GPU_HOURS / 4:.0f} (x 4 GPUs)", f"{PAPER_GPU_HOURS:.0f} GPU-hours (paper 4.1)"
    )
    if p:
        best = min(v for k, v in p.items() if k.startswith("total_"))
        table.add_row(
            PROJECTION_ROWS[9],
            f"< {GOAL_HOURS:.0f}",
            f"best projection {best:.2f} h: {best / GOAL_HOURS:.2f}x the goal, "
            f"{PAPER_GPU_HOURS / best:.1f}x fewer GPU-hours than the paper",
        )
    else:
        table.add_row(PROJECTION_ROWS[9], f"< {GOAL_HOURS:.0f}", NA)
    return table


def print_tables(console: Console, results: dict[str, Any], smoke: bool) -> None:
    console.print(step_table(results, smoke))
    console.print(data_table(results, smoke))
    console.print(projection_table(results, smoke))


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU run of every path that needs no CUDA (about a minute)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the results as JSON here (rewritten after each part)"
    )
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per variant after the warm-up (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=str, default="", help="loader worker counts, e.g. 4,8,14 (default: from the CPU count)"
    )
    parser.add_argument(
        "--loader-batches", type=int, default=8, help="timed loader batches per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--skip-compile", action="store_true", help="skip the torch.compile variant (its compile takes minutes)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds the whole run may take; DDP (needs 60 s) and torch.compile (180 s) are skipped "
        "when less is left (default: no budget)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="EPIC-layout frames with S_train.csv (default: generated into a temp folder)",
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.loader_batches < 1:
        parser.error(f"--loader-batches must be >= 1, got {args.loader_batches}")
    try:
        args.workers = tuple(int(w) for w in args.workers.split(",") if w.strip()) if args.workers else ()
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if any(w < 0 for w in args.workers):
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on CPU (the GPU measurements need CUDA)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    args = parse_args(argv)
    console = Console()
    smoke = args.smoke
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    if smoke:
        torch.set_num_threads(1)  # two OpenMP threads beside other busy processes spin-wait (benchmarks/video_io.py)
    sizes = smoke_sizes(args) if smoke else full_sizes(paper_config(), args)
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    results: dict[str, Any] = {
        "mode": "smoke (CPU, tiny model: not GPU numbers)" if smoke else "cuda",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torchvision": tv,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cpus": os.cpu_count(),
        "sizes": sizes.__dict__,
        "steps": {},
    }

    def save() -> None:
        if args.out:
            atomic_write_text(args.out, json.dumps(results, indent=1, default=str))

    console.print(
        f"torch {torch.__version__}, torchvision {tv}, device {results['device']}, {os.cpu_count()} CPUs, "
        f"mode {results['mode']}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            from features.data.synthetic_video import SyntheticVideoConfig, generate_video_domains

            start = time.perf_counter()
            h, w = sizes.frame_hw
            gen = SyntheticVideoConfig(
                height=h,
                width=w,
                num_classes=5,
                train_clips=sizes.train_clips,
                test_clips=1,
                segments_per_video=8,
                min_frames=34,
                max_frames=40,
                speed=4.0 if not smoke else 0.6,
            )
            root = generate_video_domains(Path(tmp) / "epic", gen, domains=("S",))
            console.print(
                f"generated {sizes.train_clips + 1} EPIC-layout clips at {w}x{h} in {time.perf_counter() - start:.1f} s"
            )
        base_ds = EpicClips(root, "S", "train", size=sizes.size, num_frames=sizes.frames)
        datasets = {
            "source": base_ds,
            "target": base_ds,
            "test": base_ds,
        }  # construction only: the steps use fixed clips
        out_dir = Path(tmp) / "runs"

        # 1. the stage-2 step
        cuda = device.type == "cuda"
        lowp = "bf16" if cuda else "fp32"  # the precision of the pair, DDP, stage 1 and evaluation rows
        adv = Variant(STEP_ROWS[6], precision=lowp, refinement=False)
        if cuda:
            groups = [
                [Variant(STEP_ROWS[0], channels_last=False)],
                [Variant(STEP_ROWS[1])],
                [Variant(STEP_ROWS[2], precision="bf16"), adv],
                [Variant(STEP_ROWS[3], precision="bf16", cudnn_benchmark=True)],
                [Variant(STEP_ROWS[11], precision="bf16", cudnn_benchmark=True, batchnorm="joint")],
            ]
        else:  # no bf16 / cudnn / compile / nccl: the pair is the fp32 default and adversarial-only, DDP runs on gloo
            groups = [
                [Variant(STEP_ROWS[0], channels_last=False)],
                [Variant(STEP_ROWS[1]), adv],
                [Variant(STEP_ROWS[11], batchnorm="joint")],
            ]
            for name in STEP_ROWS[2:5]:
                results["steps"][name] = {"error": NA, "variant": ""}
        # after the data path, so that a process group that will not start, or minutes of compiling, cost nothing else
        late = [("ddp", [Variant(STEP_ROWS[5], precision=lowp, ddp="nccl" if cuda else "gloo")], 60.0)]
        if cuda and args.skip_compile:
            results["steps"][STEP_ROWS[4]] = {"error": "skipped (--skip-compile)", "variant": ""}
        elif cuda:
            late.append(
                ("compile", [Variant(STEP_ROWS[4], precision="bf16", cudnn_benchmark=True, compile=True)], 180.0)
            )
        described = {
            STEP_ROWS[5]: f"{'nccl' if cuda else 'gloo (smoke; nccl needs CUDA)'}, {lowp}, channels_last_3d",
            STEP_ROWS[6]: f"{lowp}, channels_last_3d, 0 agents",
            STEP_ROWS[11]: f"{lowp}, model.batchnorm = 'joint': one batch of {2 * sizes.half} (not the paper's recipe)",
        }
        for group in groups:
            run_group(group, sizes, device, datasets, out_dir, console, results, described)
            save()
        eval_rates: dict[int, float] = {}
        step1, forward = stage1_and_eval(sizes, device, datasets, out_dir, lowp, cuda, console, eval_rates)
        results["evaluation_batches"] = {str(k): v for k, v in eval_rates.items()}
        tuned = ", channels_last_3d" + (", cudnn.benchmark" if cuda else "")
        rates = ", ".join(f"{k}: {v:.0f}" for k, v in eval_rates.items())
        for name, m, what in (
            (STEP_ROWS[7], step1, f"{sizes.stage1_batch} clips, {lowp}{tuned}"),
            (STEP_ROWS[8], forward, f"batch {forward.clips} (fastest; clips/s by batch {rates}), {lowp}{tuned}"),
        ):
            results["steps"][name] = {**m.as_dict(), "variant": what}
        save()

        # 2. the data path
        console.print("data path ...")
        results["data"] = data_path(root, sizes, device, smoke, console)
        set_appetite(results)
        save()
        console.print(
            "loop steps fed by their loaders (decode=gpu), the batch in front of the step, then prefetched ..."
        )
        results["fed"] = fed_steps(root, sizes, device, lowp, out_dir, console)
        save()
        # 3. the projection (again after torch.compile, should that be the fastest step)
        update_projection(results, cuda)
        save()
        if cuda:
            print_tables(console, results, smoke)  # the tables so far, in case the rest outlasts the time limit
        for _what, group, needs_s in late:
            left = args.time_budget - (time.perf_counter() - started) if args.time_budget else math.inf
            if left < needs_s:
                for v in group:
                    results["steps"][v.name] = {"error": f"skipped ({left:.0f} s of --time-budget left)", "variant": ""}
                continue
            run_group(group, sizes, device, datasets, out_dir, console, results, described)
            set_appetite(results)
            update_projection(results, cuda)
            save()
    print_tables(console, results, smoke)
    if args.out:
        console.print(f"results written to {args.out}")
    return results


def run_group(
    group: list[Variant],
    sizes: Sizes,
    device: torch.device,
    datasets: dict[str, Any],
    out_dir: Path,
    console: Console,
    results: dict[str, Any],
    described: dict[str, str],
) -> None:
    """Measure one group of variants into ``results["steps"]``; a pair (MMIR, adversarial-only) also gives the refinement share."""
    measured, own = measure_group(group, sizes, device, datasets, out_dir, console)
    for v in group:
        label = described.get(
            v.name,
            f"{v.precision}, {'channels_last_3d' if v.channels_last else 'contiguous'}"
            + (", cudnn.benchmark" if v.cudnn_benchmark else "")
            + (", compiled trunks" if v.compile else ""),
        )
        results["steps"][v.name] = {**measured[v.name].as_dict(), "variant": label}
    if len(group) == 2:
        mmir, adv = measured[group[0].name], measured[group[1].name]
        variant = f"{results['steps'][group[0].name]['variant']}, interleaved"
        if mmir.seconds and adv.seconds:
            share, low, high = paired_share(mmir.seconds, adv.seconds)
            results["refinement_share"] = {
                "share": share,
                "low": low,
                "high": high,
                "variant": variant,
                "of": group[0].name,
            }
        if own:
            results["refiners_own"] = {"share": statistics.median(own), "per_step": own, "variant": variant}


def update_projection(results: dict[str, Any], cuda: bool) -> None:
    """One pair's hours from the fastest stage-2 step, the stage-1 step, the evaluation forward and the loaders."""
    best = results.get("appetite_variant")
    s1, fw = results["steps"][STEP_ROWS[7]], results["steps"][STEP_ROWS[8]]
    if not best or "error" in s1 or "error" in fw:
        return
    gpu_rates = [r for r in results["data"].get("gpu", []) if "error" not in r]
    fed = results.get("fed", {}).get("on", {})
    same = results["steps"].get(STEP_ROWS[2] if cuda else STEP_ROWS[1], {})  # the fed steps' variant, compute only
    factor = (
        fed["s_per_step_median"] / same["s_per_step_median"]
        if "s_per_step_median" in fed and "s_per_step_median" in same
        else None
    )
    projection = project(
        paper_config(),
        s1["s_per_step_median"],
        results["steps"][best]["s_per_step_median"],
        fw["clips_per_s"],
        max(r["clips_per_s"] for r in results["data"]["cpu"]),
        min(r["main_process_s_per_clip"] for r in gpu_rates) if gpu_rates else None,
        factor,
    )
    projection["stage2_step_from"] = best
    results["projection" if cuda else "projection_of_smoke_numbers_not_meaningful"] = projection


def set_appetite(results: dict[str, Any]) -> None:
    """The fastest measured stage-2 step (DDP and adversarial-only aside): the clips/s the loader must keep up with."""
    candidates = [
        (r["s_per_step_median"], name)
        for name, r in results["steps"].items()
        if name in STEP_ROWS[:5] and "s_per_step_median" in r
    ]
    if candidates:
        seconds, name = min(candidates)
        results["appetite_variant"] = name
        results["appetite_clips_per_s"] = results["steps"][name]["clips_per_s"]


if __name__ == "__main__":
    main()
