"""Video I/O and I3D throughput (performance targets 4 and 5, docs/architecture.md), one table.

Measures, in one run:

- JPEG decode per frame: Pillow vs simplejpeg (libjpeg-turbo) on an EPIC-sized 456x256 frame.
- ``EpicClips`` clips/s (both modalities, training transforms, ``--size`` output) through a
  ``DataLoader`` with 0, 1 and 2 workers, on a synthetic dataset in the EPIC layout with EPIC-sized
  frames (generated into a temporary folder).
- Full-width I3D (RGB, ``[B, 3, 16, 224, 224]``) forward (eval, no grad) and forward+backward
  (train) clips/s on CPU for: the pytorch-i3d computation (``F.pad`` before every layer, the
  reference), our default (SAME padding fused into the kernels where it is static), plus
  ``channels_last_3d``, bf16 autocast, and ``torch.compile`` (when it works on this machine).

The default run is sized for about 5 minutes on 2 CPU cores (batch 2, 2 timed iterations, one
torch thread: see ``--threads``); use ``--iters``, ``--batch``, ``--clips``, ``--repeat`` for more
stable numbers, ``--skip-compile`` to save time.

    python benchmarks/video_io.py [--batch 2] [--iters 2] [--clips 24] [--size 224] [--threads 1] [--skip-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.data.epic import EpicClips, decode_jpeg  # noqa: E402
from features.data.synthetic_video import SyntheticVideoConfig, generate_video_domains  # noqa: E402
from features.i3d import InceptionI3d  # noqa: E402

Row = tuple[str, str, float, str]  # (what, variant, value, unit)


def bench_decode(repeats: int = 300) -> list[Row]:
    """Per-frame decode time of a camera-like 456x256 JPEG (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:456]
    img = np.stack([np.sin(x / 17 + c) * 60 + np.cos(y / 23 * c + 1) * 50 + 128 for c in (1, 2, 3)], -1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    rows: list[Row] = []
    for decoder in ("pillow", "simplejpeg"):
        decode_jpeg(data, False, decoder)
        start = time.perf_counter()
        for _ in range(repeats):
            decode_jpeg(data, False, decoder)
        rows.append(("JPEG decode 456x256 RGB", decoder, (time.perf_counter() - start) / repeats * 1e3, "ms/frame"))
    return rows


def bench_dataset(root: Path, size: int, workers: tuple[int, ...], batch: int, repeat: int) -> list[Row]:
    rows: list[Row] = []
    segments = EpicClips(root, "S", "train").segments * repeat  # more clips without generating more
    for n in workers:
        ds = EpicClips(root, "S", "train", size=size, seed=0, segments=segments)
        loader = DataLoader(ds, batch_size=batch, num_workers=n, shuffle=False)
        start = time.perf_counter()
        clips = sum(int(b["label"].shape[0]) for b in loader)  # includes worker start-up, as in training
        rows.append(
            (f"EpicClips rgb+flow -> {size}px, train", f"{n} workers", clips / (time.perf_counter() - start), "clips/s")
        )
    return rows


def _time(fn: Callable[[], None], iters: int) -> float:
    fn()  # warm-up (and compilation)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _variants(compile_ok: bool) -> Iterator[tuple[str, dict]]:
    yield "reference: pytorch-i3d (F.pad), fp32", {"fuse_padding": False, "channels_last": False}
    yield "fused padding, fp32 contiguous", {"channels_last": False}
    yield "fused + channels_last_3d (default)", {}
    yield "default + bf16 autocast", {"bf16": True}
    if compile_ok:
        yield "default + torch.compile", {"compile": True}


def bench_i3d(batch: int, iters: int, skip_compile: bool, console: Console) -> list[Row]:
    rows: list[Row] = []
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 16, 224, 224)
    target = torch.randint(0, 400, (batch,))
    for name, opts in _variants(not skip_compile):
        model = InceptionI3d(
            in_channels=3, fuse_padding=opts.get("fuse_padding", True), channels_last=opts.get("channels_last", True)
        )
        inp = x  # the model converts its input to its own memory format, as in training
        run = model
        if opts.get("compile"):
            run = torch.compile(model)  # type: ignore[assignment]
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if opts.get("bf16") else contextlib.nullcontext

        def forward() -> None:
            with torch.no_grad(), autocast():
                run(inp)

        def train_step() -> None:
            with autocast():
                loss = torch.nn.functional.cross_entropy(run(inp).squeeze(-1).float(), target)
            loss.backward()
            model.zero_grad(set_to_none=True)

        try:
            model.eval()
            fwd = _time(forward, iters)
            model.train()
            step = _time(train_step, iters)
        except Exception as exc:  # torch.compile needs a working C++ toolchain; report, do not die
            console.print(f"[yellow]{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}[/]")
            continue
        rows.append(("I3D full width forward", name, batch / fwd, "clips/s"))
        rows.append(("I3D full width forward+backward", name, batch / step, "clips/s"))
        console.print(f"  {name}: forward {batch / fwd:.2f} clips/s, forward+backward {batch / step:.2f} clips/s")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="I3D batch size (clips)")
    parser.add_argument("--iters", type=int, default=2, help="timed I3D iterations per variant (after 1 warm-up)")
    parser.add_argument("--clips", type=int, default=24, help="clips in the generated dataset (source train split)")
    parser.add_argument("--size", type=int, default=224, help="dataset output size (224 for I3D on EPIC)")
    parser.add_argument("--loader-batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the generated clips per loader measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the main process (0: torch's default). Default 1: on a shared "
        "2-core machine two OpenMP threads next to another busy process ran I3D 3-100x "
        "slower (spin-waiting), which made every comparison noise",
    )
    parser.add_argument("--skip-compile", action="store_true", help="skip torch.compile (its compile time is minutes)")
    parser.add_argument("--skip-i3d", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    rows = bench_decode()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticVideoConfig(
            height=256,
            width=456,
            num_classes=5,
            train_clips=args.clips,
            test_clips=1,
            segments_per_video=12,
            min_frames=34,
            max_frames=44,
            speed=4.0,
        )
        start = time.perf_counter()
        root = generate_video_domains(Path(tmp), cfg, domains=("S",))
        console.print(f"generated {args.clips + 1} EPIC-sized clips in {time.perf_counter() - start:.1f} s")
        rows += bench_dataset(root, args.size, (0, 1, 2), args.loader_batch, args.repeat)
    if not args.skip_i3d:
        rows += bench_i3d(args.batch, args.iters, args.skip_compile, console)

    table = Table(title="video I/O and I3D on CPU (performance targets 4 and 5)")
    for col in ("measure", "variant", "value", "unit", "vs first row of its measure"):
        table.add_column(col, justify="right" if col in ("value", "vs first row of its measure") else "left")
    first: dict[str, float] = {}
    for what, variant, value, unit in rows:
        base = first.setdefault(what, value)
        ratio = base / value if unit.startswith("ms") else value / base
        table.add_row(what, variant, f"{value:.3f}" if value < 10 else f"{value:.1f}", unit, f"{ratio:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
