"""``mmir extract``: run a two-stream I3D over an EPIC-layout dataset and write an HDF5 feature snapshot."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  # the procedurally generated domains (S -> T), a tiny random-init model on CPU
  mmir extract data/synthetic --source S --target T --split train --out synth_train.h5 --width 0.25 --size 64
  # EPIC-Kitchens D1 -> D2 with the public pytorch-i3d weights (the MM-SADA split files ship with mmir)
  mmir extract /data/epic --source D1 --target D2 --split test --out d1_d2_test.h5 \\
      --rgb-ckpt rgb_imagenet.pt --flow-ckpt flow_imagenet.pt --windows 5 --device cuda
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "extract",
        help="extract two-stream I3D features of an EPIC-layout dataset into an HDF5 snapshot",
        description="Run the RGB and flow I3D backbones over the source and target domains of an EPIC-layout "
        "dataset (rgb/PXX/PXX_YY/frame_*.jpg, flow/PXX/PXX_YY/{u,v}/frame_*.jpg; the MM-SADA domains D1/D2/D3 "
        "or the synthetic S/T) and write one feature row per annotated segment as a snapshot "
        "(docs/snapshot-format.md) for `mmir study` and `mmir snapshot`. Sampling is the deterministic test "
        "protocol: --windows evenly spaced windows of --frames frames (RGB stride 2, flow consecutive), centre crop, frames scaled to [-1, 1].",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data_root", type=Path, metavar="DATA_ROOT", help="folder holding rgb/ and flow/ in the EPIC layout")
    p.add_argument(
        "--source",
        required=True,
        metavar="DOMAIN",
        help="source domain: D1, D2, D3, or a split name in DATA_ROOT (e.g. S)",
    )
    p.add_argument("--target", required=True, metavar="DOMAIN", help="target domain (as --source, e.g. T)")
    p.add_argument(
        "--split", choices=("train", "test"), default="train", help="annotation split to extract (default: %(default)s)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="OUT.h5", help="snapshot to write (atomically)")
    p.add_argument(
        "--annotations",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of {DOMAIN}_{split}.csv split files (default: DATA_ROOT when it has them, "
        "else, for D1/D2/D3, the MM-SADA splits shipped with mmir in features/data/epic_splits)",
    )
    p.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="I3D channel multiplier: 1.0 is the published model (1024-d features), e.g. 0.25 a tiny CPU "
        "model (default: %(default)s)",
    )
    p.add_argument(
        "--rgb-ckpt",
        type=Path,
        default=None,
        metavar="PATH",
        help="pytorch-i3d RGB state dict (e.g. rgb_imagenet.pt); default: random init (He-normal, seeded by --seed)",
    )
    p.add_argument(
        "--flow-ckpt",
        type=Path,
        default=None,
        metavar="PATH",
        help="pytorch-i3d flow state dict (e.g. flow_imagenet.pt); default: random init (He-normal, seeded by --seed)",
    )
    p.add_argument("--frames", type=int, default=16, help="frames per window (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="side of the square crop fed to I3D (default: %(default)s)")
    p.add_argument(
        "--windows",
        type=int,
        default=1,
        help="evenly spaced windows per segment whose features are averaged; 1 is the centred window, 5 "
        "the MM-SADA test protocol (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="segments per batch (default: %(default)s)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=min(4, (os.cpu_count() or 1) // 2),
        help="DataLoader worker processes decoding JPEGs (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of randomly initialised backbones (default: %(default)s)")
    p.add_argument(
        "--dtype", choices=("float16", "float32"), default="float16", help="stored feature type (default: %(default)s)"
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        metavar="K",
        help="number of source classes (default: 8 for D1-D3, the generator's classes for synthetic data, "
        "else the largest label in the split files + 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for the backbones (default: torch's choice); 1 is much faster on a machine "
        "shared with other busy processes",
    )
    p.add_argument(
        "--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)"
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------- resolving the inputs
def _split_names(directory: Path, split: str) -> set[str]:
    return {p.name[: -len(f"_{split}.csv")] for p in directory.glob(f"*_{split}.csv")} if directory.is_dir() else set()


def _annotation_dir(domain: str, split: str, root: Path, annotations: Path | None) -> Path:
    """Folder holding ``{domain}_{split}.csv``; raises ``CLIError`` naming what is available."""
    from experiments.cli.common import CLIError
    from features.data.epic import DOMAINS, splits_dir

    if annotations is not None:
        if not annotations.is_dir():
            raise CLIError(f"--annotations: no such folder: {annotations}")
        candidates = [annotations]
    else:
        candidates = [root]
        if domain in DOMAINS:
            candidates.append(splits_dir())
    for directory in candidates:
        if (directory / f"{domain}_{split}.csv").is_file():
            return directory
    known = sorted(set(DOMAINS) | set().union(*(_split_names(d, split) for d in candidates)))
    if domain in DOMAINS:
        # without --annotations the package's own copy was looked at too: only a broken install lacks it
        hint = (
            "check --annotations DIR" if annotations is not None else "the installed package lacks them: reinstall mmir"
        )
        raise CLIError(f"no split file {domain}_{split}.csv in {', '.join(map(str, candidates))}: {hint}")
    raise CLIError(
        f"unknown domain {domain!r}: no {domain}_{split}.csv in {', '.join(map(str, candidates))}; "
        f"known domains: {', '.join(known)}"
    )


def _num_classes(args: argparse.Namespace, labels: list[int]) -> int:
    """``--num-classes``, or what the data says (see the option's help)."""
    from features.data.epic import DOMAINS, VERB_CLASSES

    if args.num_classes is not None:
        return int(args.num_classes)
    meta = args.data_root / "synthetic_video.json"
    if meta.is_file():
        try:
            classes = json.loads(meta.read_text()).get("classes")
        except (OSError, ValueError):
            classes = None
        if isinstance(classes, list) and classes:
            return len(classes)
    if args.source in DOMAINS and args.target in DOMAINS:
        return len(VERB_CLASSES)
    return max([*labels, 0]) + 1


class SegmentWindows:
    """One item per segment of an ``EpicClips`` in test mode: its ``n`` windows stacked (a map-style dataset;
    no ``torch`` base class so that importing the CLI stays free of torch).

    Items: per modality ``[n, C, T, H, W]``, ``label``, ``uid``, ``domain`` (the role), and
    ``is_negative`` when ``negatives`` (both domains must agree, for batches that mix them).
    """

    def __init__(self, clips: Any, negatives: bool) -> None:
        self.clips = clips
        self.negatives = negatives

    def __len__(self) -> int:
        return len(self.clips.segments)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        n = self.clips.clips_per_segment
        items = [self.clips[index * n + j] for j in range(n)]
        out: dict[str, Any] = {m: torch.stack([it[m] for it in items]) for m in self.clips.modalities}
        first = items[0]
        out.update(label=first["label"], uid=first["uid"], domain=first["domain"])
        if self.negatives:
            out["is_negative"] = first["is_negative"]
        return out


def _device(name: str) -> Any:
    """``--device`` as a torch device; a bad name, or CUDA on a machine without it, is a CLIError."""
    import torch

    from experiments.cli.common import CLIError
    from features.devices import resolve_device

    try:
        device = resolve_device(name)
    except RuntimeError as err:
        raise CLIError(f"--device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    return device


def _check_args(args: argparse.Namespace) -> None:
    from experiments.cli.common import CLIError

    for name, low in (("frames", 1), ("size", 8), ("windows", 1), ("batch_size", 1), ("num_workers", 0)):
        if getattr(args, name) < low:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if not args.width > 0:
        raise CLIError(f"--width must be > 0, got {args.width}")
    if args.num_classes is not None and args.num_classes < 1:
        raise CLIError(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.source == args.target:
        raise CLIError(f"--source and --target must be different domains, got {args.source!r} twice")
    if not args.data_root.is_dir():
        raise CLIError(f"data root not found: {args.data_root}")
    missing = [d for d in ("rgb", "flow") if not (args.data_root / d).is_dir()]
    if missing:
        raise CLIError(
            f"{args.data_root} is not an EPIC-layout dataset: no {' or '.join(f'{d}/' for d in missing)} folder "
            "(expected rgb/PXX/PXX_YY/frame_*.jpg and flow/PXX/PXX_YY/{u,v}/frame_*.jpg)"
        )
    for flag, path in (("--rgb-ckpt", args.rgb_ckpt), ("--flow-ckpt", args.flow_ckpt)):
        if path is not None and not path.is_file():
            raise CLIError(f"{flag}: no such file: {path}")
    if args.out.exists() and not args.force:
        raise CLIError(f"{args.out} exists; pass --force to replace it")
    if not args.out.parent.is_dir():
        raise CLIError(f"--out: no such folder: {args.out.parent}")


def _unreadable_checkpoint(checkpoints: dict[str, Path], err: Exception) -> str:
    """One line naming which checkpoint file cannot be read (only called on the error path)."""
    import torch

    for modality, path in checkpoints.items():
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:200]
            return f"cannot read --{modality}-ckpt {path} as a state dict (torch.load, weights_only=True): {type(exc).__name__}: {first}"
    return f"cannot load checkpoints {', '.join(map(str, checkpoints.values()))}: {type(err).__name__}: {err}"


def _frame_error_line(err: BaseException) -> str:
    """The original message of a ``FrameReadError``, also when a DataLoader worker wrapped it."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    marker = "FrameReadError: "
    return last.split(marker, 1)[1] if marker in last else last


# ---------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    """Resolve domains, annotations and backbones, then extract and write the snapshot."""
    import torch
    from rich.console import Console
    from torch.utils.data import ConcatDataset, DataLoader

    from experiments.cli.common import CLIError
    from features.backbones import i3d_feature_backbones
    from features.data.epic import EpicClips, FrameReadError
    from features.extract import extract_snapshot
    from features.i3d import CheckpointMismatchError

    _check_args(args)
    device = _device(args.device)
    console = Console()

    datasets: dict[str, Any] = {}
    split_dirs: dict[str, str] = {}
    labels: list[int] = []
    for role, domain in (("source", args.source), ("target", args.target)):
        splits = _annotation_dir(domain, args.split, args.data_root, args.annotations)
        try:
            ds = EpicClips(
                args.data_root,
                domain,
                args.split,
                mode="test",
                splits=splits,
                size=args.size,
                num_frames=args.frames,
                test_clips=args.windows,
                seed=args.seed,
                role=role,
            )  # type: ignore[arg-type]
        except (OSError, ValueError) as err:  # unreadable or malformed split file
            raise CLIError(f"{domain}: {err}") from None
        if not ds.segments:
            raise CLIError(f"{splits / f'{domain}_{args.split}.csv'} has no segments")
        datasets[role] = ds
        split_dirs[role] = str(splits)
        labels += ds.labels.tolist()
    num_classes = _num_classes(args, labels)
    for role, ds in datasets.items():
        low = -1 if role == "target" else 0
        bad = sorted({int(v) for v in ds.labels if not low <= v < num_classes})
        if bad:
            raise CLIError(
                f"{role} domain {ds.domain}: verb_class values {bad[:5]} outside [{low}, {num_classes}); "
                "set --num-classes or check the split file"
            )

    checkpoints = {m: p for m, p in (("rgb", args.rgb_ckpt), ("flow", args.flow_ckpt)) if p is not None}
    try:
        backbones = i3d_feature_backbones(("rgb", "flow"), width=args.width, checkpoints=checkpoints, seed=args.seed)
    except CheckpointMismatchError as err:
        raise CLIError(f"checkpoint does not match (is --width {args.width} right?): {err}") from None
    except Exception as err:  # torch.load of a damaged or foreign file raises many types
        if not checkpoints:
            raise
        raise CLIError(_unreadable_checkpoint(checkpoints, err)) from None
    for b in backbones.values():
        b.to(device)
    dims = {m: b.feature_dim for m, b in backbones.items()}
    if len(set(dims.values())) != 1:
        raise CLIError(f"the RGB and flow backbones give different feature widths {dims}: use checkpoints of one width")

    negatives = all(ds.has_negatives for ds in datasets.values())
    data = ConcatDataset([SegmentWindows(ds, negatives) for ds in datasets.values()])
    loader = DataLoader(
        data, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers, pin_memory=device.type == "cuda"
    )
    config = {
        "command": "extract",
        "data_root": str(args.data_root),
        "source": args.source,
        "target": args.target,
        "split": args.split,
        "width": args.width,
        "rgb_ckpt": str(args.rgb_ckpt) if args.rgb_ckpt else None,
        "flow_ckpt": str(args.flow_ckpt) if args.flow_ckpt else None,
        "frames": args.frames,
        "size": args.size,
        "windows": args.windows,
        "seed": args.seed,
        "num_classes": num_classes,
        "annotations": split_dirs,
    }
    console.print(
        f"extracting {args.split}: source {args.source} ({len(datasets['source'].segments)} segments), "
        f"target {args.target} ({len(datasets['target'].segments)} segments), {args.windows} window(s) each, "
        f"I3D width {args.width} ({dims['rgb']}-d), {', '.join(f'{m} from {p}' for m, p in checkpoints.items()) or 'random init'}, "
        f"{device}",
        highlight=False,
    )
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        result = extract_snapshot(
            backbones,
            loader,
            args.out,
            num_classes,
            dtype=args.dtype,
            config=config,
            progress=not args.no_progress,
            console=console,
        )
    except FrameReadError as err:
        raise CLIError(_frame_error_line(err)) from None
    except RuntimeError as err:  # a worker's FrameReadError can arrive re-wrapped
        if "FrameReadError" in str(err):
            raise CLIError(_frame_error_line(err)) from None
        raise
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests, notebooks) keep their setting
    console.print(
        f"wrote {result.path}: source {result.rows['source']} rows, target {result.rows['target']} rows, "
        f"{len(backbones)} modalities x {result.feature_dim}-d {args.dtype}, K={num_classes}, "
        f"{result.seconds:.1f} s ({result.clips_per_second:.1f} segments/s)",
        highlight=False,
    )
    return 0
