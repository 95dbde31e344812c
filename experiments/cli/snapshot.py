"""``mmir snapshot``: inspect, validate and synthesise HDF5 feature snapshots."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Errors a damaged file can raise from h5py or numpy below the snapshot layer; the CLI reports them
# as a verdict, never as a traceback.
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError)


EXAMPLES = """\
examples:
  mmir snapshot inspect runs/D2-D1/snapshots/step000800.h5
  mmir snapshot validate runs/D2-D1/snapshots/step000800.h5 --full   # every row checked for NaN/inf
  mmir snapshot synth synth.h5 --seed 1 --dtype float16
"""


def register(sub: Any) -> None:
    from experiments.cli.common import ExamplesFormatter

    p = sub.add_parser(
        "snapshot",
        help="inspect, validate or synthesise HDF5 feature snapshots",
        description="Work with feature snapshots (docs/snapshot-format.md): summarise one, check it against the "
        "schema, or write the synthetic benchmark as a snapshot for offline agent studies without video.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    actions = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="summary: schema, datasets, counts, feature statistics, validation verdict",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    inspect.add_argument("file", type=Path, help="snapshot file (.h5)")
    inspect.add_argument(
        "--full", action="store_true", help="check every row for NaN/inf (default: a sample of rows on large files)"
    )
    inspect.add_argument(
        "--max-rows",
        type=int,
        default=20000,
        help="rows sampled per domain for feature statistics (default: %(default)s)",
    )
    inspect.set_defaults(func=run_inspect)

    validate = actions.add_parser(
        "validate",
        help="check a snapshot against the schema; exit 0 if valid, 1 if not",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    validate.add_argument("file", type=Path, help="snapshot file (.h5)")
    validate.add_argument(
        "--full", action="store_true", help="check every row for NaN/inf (default: a sample of rows on large files)"
    )
    validate.set_defaults(func=run_validate)

    synth = actions.add_parser(
        "synth",
        help="write the synthetic benchmark (both modalities, ground truth, pre-trained discriminators) as a snapshot",
        description="Write the synthetic benchmark as a snapshot: the same data and discriminators as the in-memory "
        "synthetic source of `mmir study` with the same seed, so studies on snapshots can be tried with no video.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    synth.add_argument("out", type=Path, help="output file (.h5); written atomically")
    synth.add_argument(
        "--seed", type=int, default=0, help="seed of the data and the discriminators (default: %(default)s)"
    )
    synth.add_argument("--feature-dim", type=int, default=1024, help="feature dimension d (default: %(default)s)")
    synth.add_argument("--num-source", type=int, default=2000, help="source clips (default: %(default)s)")
    synth.add_argument("--num-target", type=int, default=2000, help="target clips (default: %(default)s)")
    synth.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="stored feature type; float32 reproduces the in-memory source bit for bit (default: %(default)s)",
    )
    synth.add_argument(
        "--pretrain-steps", type=int, default=None, help="discriminator pre-training steps (default: as `mmir study`)"
    )
    synth.add_argument("--force", action="store_true", help="replace OUT if it exists")
    synth.set_defaults(func=run_synth)


def _open(path: Path, full: bool) -> tuple[Any, list[str], str]:
    """The snapshot (None if it cannot be opened), its problems and what was checked (" (sampled: ...)" or "")."""
    from features.snapshot import Snapshot, SnapshotError

    try:
        snap = Snapshot(path, validate=False)
    except SnapshotError as err:
        return None, err.problems, ""
    except _READ_ERRORS as err:
        return None, [f"cannot open: {type(err).__name__}: {err}"], ""
    check = snap.check(full=full)
    return snap, check.problems, check.scope


def _print_problems(console: Console, path: Path, problems: list[str], scope: str = "") -> None:
    if problems:
        console.print(f"[bold red]INVALID[/] {path}: {len(problems)} problem{'s' * (len(problems) != 1)}")
        for problem in problems:
            console.print(f"  - {problem}", markup=False, highlight=False)
    else:
        console.print(f"[bold green]VALID[/] {path}{scope}")


def run_validate(args: argparse.Namespace) -> int:
    from experiments.cli.common import CLIError

    if not args.file.exists():
        raise CLIError(f"no such file: {args.file}")
    _, problems, scope = _open(args.file, args.full)
    _print_problems(Console(), args.file, problems, scope)
    return 1 if problems else 0


def run_inspect(args: argparse.Namespace) -> int:
    from experiments.cli.common import CLIError

    if not args.file.exists():
        raise CLIError(f"no such file: {args.file}")
    if args.max_rows < 1:
        raise CLIError(f"--max-rows must be >= 1, got {args.max_rows}")
    console = Console()
    snap, problems, scope = _open(args.file, args.full)
    if snap is not None:
        try:
            _print_schema(console, snap)
            _print_datasets(console, snap)
            if not problems:  # counts and statistics assume the schema holds
                _print_contents(console, snap, snap.summary(max_rows=args.max_rows))
        except _READ_ERRORS as err:
            problems = [*problems, f"cannot read: {type(err).__name__}: {err}"]
    _print_problems(console, args.file, problems, scope)
    return 1 if problems else 0


def _print_schema(console: Console, snap: Any) -> None:
    table = Table(title=f"Snapshot {snap.path} ({snap.path.stat().st_size / 2**20:.1f} MiB)", show_header=False)
    table.add_column("attribute", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in snap.attrs().items():
        if key == "config":
            try:
                value = json.dumps(json.loads(value), sort_keys=True)
            except (TypeError, ValueError):
                pass
            value = value if len(str(value)) <= 300 else str(value)[:297] + "..."
        table.add_row(key, str(value))
    console.print(table)


def _print_datasets(console: Console, snap: Any) -> None:
    import h5py

    table = Table(title="Datasets")
    for col in ("path", "shape", "dtype", "layout"):
        table.add_column(col)

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            layout = "contiguous" if item.chunks is None else f"chunked {item.chunks}"
            if item.compression:
                layout += f", {item.compression}"
            dtype = "utf-8 string" if h5py.check_string_dtype(item.dtype) is not None else str(item.dtype)
            table.add_row(f"/{name}", str(item.shape), dtype, layout)

    snap.file.visititems(visit)
    console.print(table)


def _print_contents(console: Console, snap: Any, summary: dict[str, Any]) -> None:
    domains = summary["domains"]
    counts = Table(title="Clips per domain and class (-1: outside the source classes)")
    counts.add_column("class", justify="right")
    for domain in domains:
        counts.add_column(domain, justify="right")
    classes = sorted({c for info in domains.values() for c in info.get("class_counts", {})})
    for c in classes:
        counts.add_row(
            str(c),
            *(
                str(info["class_counts"].get(c, 0)) if "class_counts" in info else "unlabelled"
                for info in domains.values()
            ),
        )
    counts.add_row("[bold]total[/]", *(f"[bold]{info['num_rows']}[/]" for info in domains.values()))
    counts.add_row(
        "planted negatives",
        *("n/a" if info["negatives"] is None else str(info["negatives"]) for info in domains.values()),
    )
    console.print(counts)

    stats = Table(title="Feature statistics (sampled rows)")
    for col in ("domain", "modality", "rows", "mean", "std", "min", "max", "mean |f|"):
        stats.add_column(col, justify="left" if col in ("domain", "modality") else "right")
    for domain, info in domains.items():
        for modality, s in info["modalities"].items():
            stats.add_row(
                domain,
                modality,
                str(s["rows_sampled"]),
                *(_num(s[k]) for k in ("mean", "std", "min", "max", "mean_norm")),
            )
    console.print(stats)

    disc = Table(title="Discriminators")
    disc.add_column("modality")
    disc.add_column("stored")
    for modality, present in summary["discriminators"].items():
        if present:
            attrs = dict(snap.file[f"/discriminator/{modality}"].attrs)
            detail = ", ".join(f"{k}={v}" for k, v in attrs.items())
            disc.add_row(modality, f"yes ({detail})")
        else:
            disc.add_row(modality, "no (pass discriminator= to SnapshotSource)")
    console.print(disc)


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.4f}"


def run_synth(args: argparse.Namespace) -> int:
    from experiments.cli.common import CLIError
    from features.atomic_io import folder_problem
    from features.snapshot import Snapshot, SnapshotError
    from mmir_env.sources.snapshot import write_synthetic_snapshot

    if args.out.exists() and not args.force:
        raise CLIError(f"{args.out} exists; pass --force to replace it")
    if args.out.is_dir():
        raise CLIError(f"{args.out} is a directory, expected a file name such as synth.h5")
    if args.pretrain_steps is not None and args.pretrain_steps < 1:
        raise CLIError(f"--pretrain-steps must be >= 1, got {args.pretrain_steps}")
    problem = folder_problem(args.out.parent)
    if problem is not None:
        raise CLIError(f"OUT {args.out}: {problem}; write it into a writable folder")
    console = Console()
    try:
        with console.status(f"writing the synthetic benchmark (seed {args.seed}, d={args.feature_dim}) to {args.out}"):
            write_synthetic_snapshot(
                args.out,
                seed=args.seed,
                dtype=args.dtype,
                pretrain_steps=args.pretrain_steps,
                feature_dim=args.feature_dim,
                num_source=args.num_source,
                num_target=args.num_target,
            )
        snap = Snapshot(args.out)
    except (SnapshotError, TypeError, ValueError, OSError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    size = args.out.stat().st_size / 2**20
    console.print(
        f"wrote {args.out} ({size:.1f} MiB): {snap.num_rows('source')} source + {snap.num_rows('target')} target clips, "
        f"modalities {', '.join(snap.modalities)}, d={snap.feature_dim}, {snap.dtype}, discriminators stored"
    )
    return 0
