"""``mmir classify``: a video's Kinetics-400 top classes from the pretrained RGB I3D (a backbone sanity check)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  mmir classify tests/data/kinetics_i3d/v_CricketShot_g04_c01_rgb.gif     # -> playing cricket (in a clone)
  mmir classify my_clip.mp4 --top 10 --frames 64
  mmir classify my_clip.mp4 --weights my_finetuned_rgb.pt --labels my_classes.txt
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "classify",
        help="print a video's Kinetics-400 top classes from the pretrained RGB I3D",
        description="Decode VIDEO (PyAV, the `video` extra: pip install 'mmir[video]'; GIFs also decode without it), "
        "take its first --frames frames, resize the shorter side to 256 and centre-crop 224 (frames already 224x224 "
        "are kept), scale to [-1, 1], run the RGB I3D and print the top classes with their probabilities (logits "
        "averaged over time, then softmax, as in DeepMind's evaluate_sample.py). Without --weights the Kinetics-400 "
        "weights are fetched into the cache first (`mmir weights fetch i3d-kinetics-rgb`).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", type=Path, metavar="VIDEO", help="video file (mp4, avi, webm, mkv, GIF, ...)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="RGB InceptionI3d / pytorch-i3d state dict (default: the Kinetics-400 weights from the cache)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="FILE",
        help="class names, line i = class i (default: the Kinetics-400 names for a 400-class model)",
    )
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default: %(default)s)")
    p.add_argument(
        "--frames",
        type=int,
        default=250,
        help="use the first N decodable frames (fewer if the video is shorter; default: %(default)s, 10 s at 25 fps)",
    )
    p.add_argument("--size", type=int, default=224, help="side of the square centre crop (default: %(default)s)")
    p.add_argument(
        "--cache", type=Path, default=None, metavar="DIR", help="weights cache (default: $MMIR_CACHE or ~/.cache/mmir)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pickle

    import torch
    from rich.console import Console
    from rich.table import Table

    from experiments.cli.common import CLIError
    from features.i3d import CheckpointMismatchError, InceptionI3d
    from features.pretrained import (
        PRETRAINED,
        FlaxConversionError,
        classify_clip,
        fetch_kinetics_i3d,
        kinetics_labels,
        preprocess_frames,
    )
    from features.registry_files import ChecksumError, FetchError
    from features.video_decode import (
        VideoBackendMissingError,
        VideoDecodeError,
        decode_video_frames,
    )

    if args.top < 1 or args.frames < 1 or args.size < 1:
        raise CLIError("--top, --frames and --size must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    from experiments.config import ConfigError
    from experiments.runs import usable_device

    try:
        device = usable_device(args.device, key="--device")
    except ConfigError as err:
        raise CLIError(str(err)) from None
    console = Console()

    try:
        frames = decode_video_frames(args.video, max_frames=args.frames)
    except (FileNotFoundError, VideoDecodeError, VideoBackendMissingError) as err:
        raise CLIError(str(err)) from None

    weights = args.weights
    if weights is None:
        spec = PRETRAINED["i3d-kinetics-rgb"]
        if not spec.converted_path(args.cache).is_file():
            print(
                "fetching the Kinetics-400 RGB I3D weights (mmir weights fetch i3d-kinetics-rgb) ...", file=sys.stderr
            )
        try:
            weights = fetch_kinetics_i3d(cache=args.cache)
        except (ChecksumError, FetchError, FlaxConversionError, pickle.UnpicklingError) as err:
            raise CLIError(f"could not fetch the Kinetics weights: {err}") from None
    try:
        model = InceptionI3d.from_checkpoint(weights, "rgb", map_location="cpu").to(device).eval()
    except (FileNotFoundError, CheckpointMismatchError, pickle.UnpicklingError, RuntimeError) as err:
        hint = "" if args.weights is not None else " (try `mmir weights fetch i3d-kinetics-rgb --force`)"
        raise CLIError(f"cannot load weights {weights}: {err}{hint}") from None

    try:
        if args.labels is not None:
            labels = [line.strip() for line in args.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif model.num_classes == 400:
            labels = kinetics_labels()
        else:
            labels = [f"class {i}" for i in range(model.num_classes)]
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot read labels: {err}") from None
    if len(labels) != model.num_classes:
        raise CLIError(f"{args.labels}: {len(labels)} class names for a model with {model.num_classes} classes")

    clip = preprocess_frames(frames, size=args.size)
    start = time.perf_counter()
    probs, logits = classify_clip(model, clip)
    seconds = time.perf_counter() - start

    t, h, w, _ = frames.shape
    table = Table(title=f"{args.video.name}: top {min(args.top, len(labels))} classes")
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column("logit", justify="right")
    for rank, index in enumerate(probs.argsort(descending=True)[: args.top].tolist(), start=1):
        table.add_row(str(rank), labels[index], f"{float(probs[index]):.5f}", f"{float(logits[index]):.2f}")
    console.print(table)
    console.print(
        f"{t} frames of {w}x{h} -> clip {list(clip.shape)} in [-1, 1]; weights {weights}; "
        f"forward {seconds:.1f} s on {device}"
    )
    return 0
