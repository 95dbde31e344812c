"""Loader clips/s by worker count, with and without :func:`experiments.data_streams.worker_init_fn`.

The loop's loader (:func:`experiments.data_streams.stream_loader`: ``EpicClips`` behind a
``BatchStream``, persistent workers) on the demo's synthetic video domains
(:func:`experiments.demo.ensure_demo_data`, 64 x 64 JPEG frames, both modalities, the demo's 32 px
training clips), or on EPIC-sized 456 x 256 frames generated into a temporary folder (``--epic-size``).
For each worker count the two loaders ("before": no ``worker_init_fn``, "after": the one
``stream_loader`` passes) are timed alternately, ``--repeats`` times each, worker start-up and the
first batch excluded; the table gives medians. Every batch of every variant is checked against the
0-worker batches: the worker set-up must not change a pixel.

    python benchmarks/loader_workers.py [--workers 0,1,2] [--batches 6] [--repeats 5] [--epic-size]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.data_streams import BatchStream, EpochIndexed, worker_init_fn  # noqa: E402
from features.data.epic import EpicClips  # noqa: E402

VARIANTS: dict[str, Callable[[int], None] | None] = {"before (no worker_init_fn)": None, "after": worker_init_fn}


def loader(dataset: EpicClips, batch: int, workers: int, init: Callable[[int], None] | None) -> Iterator[Any]:
    """``stream_loader``'s DataLoader with ``worker_init_fn=init``."""
    sampler = BatchStream(len(dataset), batch, seed=0, stream=1)
    return iter(
        DataLoader(
            EpochIndexed(dataset),
            batch_sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=init,
            generator=torch.Generator().manual_seed(1),
        )
    )


def measure(
    dataset: EpicClips, batch: int, workers: int, batches: int, init: Callable[[int], None] | None
) -> tuple[float, list[dict[str, Any]]]:
    """Clips/s over ``batches`` batches after the first, and every batch seen (first included)."""
    it = loader(dataset, batch, workers, init)
    seen = [next(it)]  # workers start, first batch
    start = time.perf_counter()
    for _ in range(batches):
        seen.append(next(it))
    rate = batch * batches / (time.perf_counter() - start)
    del it  # persistent workers shut down with their iterator
    return rate, seen


def same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return all(
        x.keys() == y.keys()
        and all(torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k] for k in x)
        for x, y in zip(a, b, strict=True)
    )


def epic_sized_root(tmp: Path, clips: int) -> Path:
    from features.data.synthetic_video import SyntheticVideoConfig, generate_video_domains

    cfg = SyntheticVideoConfig(
        height=256,
        width=456,
        num_classes=5,
        train_clips=clips,
        test_clips=1,
        segments_per_video=12,
        min_frames=34,
        max_frames=44,
    )
    return generate_video_domains(tmp, cfg, domains=("S",))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--batch", type=int, default=20, help="clips per batch (the demo's 20)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per variant and worker count")
    parser.add_argument("--size", type=int, default=0, help="clip side (default: 32 demo, 224 --epic-size)")
    parser.add_argument("--epic-size", action="store_true", help="EPIC-sized 456x256 frames instead of the demo's")
    parser.add_argument("--clips", type=int, default=24, help="generated clips with --epic-size")
    args = parser.parse_args(argv)
    workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    console = Console()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f} (other jobs share them)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.epic_size:
            root, size = epic_sized_root(Path(tmp), args.clips), args.size or 224
        else:
            from experiments.demo import ensure_demo_data

            root, size = ensure_demo_data(0), args.size or 32
        dataset = EpicClips(root, "S", "train", size=size, seed=0)
        segments = dataset.segments * max(1, -(-args.batch * (args.batches + 2) // len(dataset.segments)))
        dataset = EpicClips(root, "S", "train", size=size, seed=0, segments=segments)
        console.print(f"{root}: {len(dataset)} clips of {size} px, batch {args.batch}, {args.batches} timed batches")
        _, reference = measure(dataset, args.batch, 0, args.batches, None)
        rates: dict[tuple[int, str], list[float]] = {}
        identical = True
        for _ in range(args.repeats):
            for n in workers:
                for name, init in VARIANTS.items():
                    rate, seen = measure(dataset, args.batch, n, args.batches, init)
                    rates.setdefault((n, name), []).append(rate)
                    identical &= same_batches(seen, reference)
    table = Table(title="EpicClips through the loop's loader (median clips/s)")
    for col in ("workers", *VARIANTS, "after / before", "runs"):
        table.add_column(col, justify="right")
    for n in workers:
        med = [statistics.median(rates[n, name]) for name in VARIANTS]
        table.add_row(str(n), *(f"{m:.1f}" for m in med), f"{med[1] / med[0]:.2f}x", str(args.repeats))
    console.print(table)
    console.print(f"every batch identical to the 0-worker batches: {identical}")
    if not identical:
        raise SystemExit("batches differ between loaders")


if __name__ == "__main__":
    main()
