"""``mmir prepare-videos``: decode videos into RGB and optical-flow JPEG frames in the EPIC layout."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  # two folders of videos with segments in a.csv / b.csv (video,start_time,stop_time,verb_class,verb),
  # as the domains A and B of one dataset (distinct participant folders), then features of A -> B
  mmir prepare-videos kitchen_a/ data/mine --annotations a.csv --domain A --participant P01
  mmir prepare-videos kitchen_b/ data/mine --annotations b.csv --domain B --participant P02
  mmir extract data/mine --source A --target B --split train --out a_b.h5
  # quick look: fast DIS flow, native size, every video in the folder, 2 processes
  mmir prepare-videos videos/ data/quick --flow dis --size 0 --workers 2

input annotation CSV (docs/prepare-videos.md): video,start_frame,stop_frame,verb_class[,verb,narration,uid,split,
participant_id,video_id,...] with 1-based inclusive frame numbers, or start_time,stop_time (seconds or
HH:MM:SS.ss) instead of the frame columns.

exit status: 0 all videos prepared (or already complete), 1 some video failed (listed at the end),
2 a usage error (bad option, malformed annotation CSV, missing video extra).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prepare-videos",
        help="decode videos into RGB + optical-flow JPEG frames in the EPIC layout (resumable)",
        description="Decode the videos of VIDEO_DIR (those the annotation CSV names, or all of them) and write "
        "OUT/rgb/<participant>/<video_id>/frame_%010d.jpg, optical flow OUT/flow/<participant>/<video_id>/{u,v}/ "
        "(flow frame k: RGB frame 2k -> 2k+2, clipped to +-bound px and stored as uint8 with 128 = zero), a completion "
        "marker per video under OUT/prepared/, and the EPIC split file OUT/<domain>_<split>.csv that EpicClips and "
        "`mmir extract` read. Rerunning skips complete videos and redoes interrupted ones; a broken video is reported "
        "by name and the others go on.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video_dir", type=Path, metavar="VIDEO_DIR", help="folder holding the videos")
    p.add_argument("out", type=Path, metavar="OUT", help="dataset root to write (rgb/, flow/, split files)")
    p.add_argument(
        "--annotations",
        type=Path,
        default=None,
        metavar="CSV",
        help="segments to annotate (format below); without it every video file directly in VIDEO_DIR is "
        "prepared and no split file is written",
    )
    p.add_argument(
        "--domain",
        default="videos",
        help="domain name: the split file is OUT/<domain>_<split>.csv (default: %(default)s)",
    )
    p.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="split of rows without a 'split' column value (default: %(default)s)",
    )
    p.add_argument(
        "--participant",
        default="P00",
        help="participant folder of videos whose rows give no participant_id (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=256,
        help="shorter side of the written frames in pixels, aspect kept; 0 keeps the decoded size (default: %(default)s, as EPIC)",
    )
    p.add_argument(
        "--flow",
        choices=("auto", "tvl1", "dis", "farneback"),
        default="auto",
        help="optical flow: tvl1 (OpenCV contrib Dual TV-L1, what I3D flow models expect; ~2 s per 456x256 pair "
        "on a CPU core), dis (DIS medium preset, ~100x faster), farneback; auto = the first available in that "
        "order (default: %(default)s)",
    )
    p.add_argument(
        "--flow-bound",
        type=float,
        default=20.0,
        help="flow clipping bound in pixels for the uint8 JPEGs (default: %(default)s, as EPIC)",
    )
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of all frames (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="videos prepared in parallel processes (default: %(default)s; up to the number of cores, "
        f"{os.cpu_count()} here)",
    )
    p.add_argument("--force", action="store_true", help="redo videos that are already complete")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options, prepare the videos, print a summary; 1 if some video failed."""
    from rich.console import Console

    from experiments.cli.common import CLIError
    from features.data.prepare_videos import missing_video_modules

    missing = missing_video_modules()
    if missing:
        raise CLIError(
            f"prepare-videos needs the video extra (PyAV and OpenCV contrib), missing: {', '.join(missing)}; "
            "install it with: pip install 'mmir[video]'"
        )
    from features.data.prepare_videos import (
        AnnotationError,
        PrepareOptions,
        prepare_videos,
        resolve_flow_algorithm,
    )

    if not args.video_dir.is_dir():
        raise CLIError(f"VIDEO_DIR not found: {args.video_dir}")
    if args.annotations is not None and not args.annotations.is_file():
        raise CLIError(f"--annotations: no such file: {args.annotations}")
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"OUT exists and is not a folder: {args.out}")
    try:
        flow = resolve_flow_algorithm(args.flow)
        options = PrepareOptions(size=args.size, flow=flow, flow_bound=args.flow_bound, jpeg_quality=args.jpeg_quality)
    except (ValueError, RuntimeError) as err:
        raise CLIError(str(err)) from None

    console = Console(soft_wrap=True)
    console.print(
        f"preparing videos of {args.video_dir} into {args.out}: flow {flow}"
        f"{' (auto)' if args.flow == 'auto' else ''}, shorter side {args.size or 'as decoded'}, "
        f"bound {args.flow_bound:g} px, {args.workers} worker(s)",
        highlight=False,
    )
    try:
        summary = prepare_videos(
            args.video_dir,
            args.out,
            args.annotations,
            options=options,
            domain=args.domain,
            split=args.split,
            participant=args.participant,
            workers=args.workers,
            force=args.force,
            progress=not args.no_progress,
            console=console,
        )
    except AnnotationError as err:
        raise CLIError(str(err)) from None
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None

    counts = {s: sum(r.status == s for r in summary.results) for s in ("prepared", "skipped", "failed")}
    frames = sum(r.frames for r in summary.results if r.status == "prepared")
    console.print(
        f"done in {summary.seconds:.1f} s: {counts['prepared']} prepared ({frames} frames), "
        f"{counts['skipped']} already complete, {counts['failed']} failed",
        highlight=False,
    )
    for split, path in summary.split_files.items():
        console.print(
            f"wrote {path}: {summary.segments[split]} segments (read it with EpicClips({str(args.out)!r}, "
            f"{args.domain!r}, {split!r}))",
            highlight=False,
        )
    if args.annotations is not None and summary.left_out:
        console.print(
            f"{summary.left_out} segment(s) left out (their video failed or they lie past its end)", highlight=False
        )
    for warning in summary.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} video(s) failed:[/]", highlight=False)
        for r in summary.failed:
            console.print(f"  {r.message}", highlight=False, soft_wrap=True)
        return 1
    return 0
