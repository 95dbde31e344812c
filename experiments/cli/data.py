"""``mmir data``: fetch real data sets that ship inside package-registry archives into the user cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DATASETS: tuple[str, ...] = ("watch",)

EXAMPLES = """\
examples:
  mmir data fetch watch                                   # prints the converted file's path and a summary
  mmir data fetch watch --archive seglearn-1.2.5-py3-none-any.whl   # offline, from a downloaded wheel
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "data",
        help="fetch real data sets (smartwatch exercises: left/right arm domains) into the user cache",
        description="Data sets that ship inside package-registry archives. `fetch watch` downloads the pinned wheel "
        "seglearn==1.2.5 with `pip download --no-deps` (never installs it), verifies the sha256 of the wheel and of "
        "watch_dataset.npy, reads it once with a restricted unpickler, validates it and converts it to a plain .npz "
        "that runs read without unpickling; then prints that file's path and the recordings and 2-second windows per "
        "arm, subject and exercise (features/data/watch.py, docs/results-watch.md). The cache is $MMIR_CACHE or "
        "~/.cache/mmir unless --cache is given.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download, verify and convert a data set; print its path and a summary")
    fetch.add_argument("name", metavar="NAME", help=f"data set to fetch: {', '.join(DATASETS)}")
    from experiments.cli.common import add_registry_fetch_options

    add_registry_fetch_options(fetch)
    fetch.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    import pickle

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from experiments.cli.common import CLIError, check_cache_option
    from features.data.watch import (
        CLASSES,
        TEST_SUBJECTS,
        WATCH,
        WINDOW,
        WatchDataError,
        converted_path,
        load_watch,
        summary_rows,
    )
    from features.registry_files import ChecksumError, FetchError

    if args.name not in DATASETS:
        raise CLIError(f"unknown data set {args.name!r}; known: {', '.join(DATASETS)}")
    if args.archive is not None and not args.archive.is_file():
        raise CLIError(f"--archive {args.archive}: no such file")
    check_cache_option(args.cache, writing=False)
    out = converted_path(args.cache)
    if args.force or not out.is_file():
        check_cache_option(args.cache, writing=True)
        origin = (
            args.archive
            if args.archive is not None
            else f"{WATCH.package}=={WATCH.version} ({WATCH.kind}, pip download --no-deps)"
        )
        print(f"fetching {WATCH.member} from {origin} ...", file=sys.stderr)
    try:
        data = load_watch(args.cache, args.archive, force=args.force)
    except (ChecksumError, FetchError, WatchDataError, pickle.UnpicklingError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    console = Console()
    rows = summary_rows(data)
    table = Table(
        title=f"watch: {len(data)} recordings at 50 Hz, windows of {WINDOW} samples (2 s), 50% overlap",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    for col in ("arm", "subj", "split", "recs", "windows", *CLASSES):
        table.add_column(col, justify="left" if col in ("arm", "split") else "right", no_wrap=True)
    for arm in ("left", "right"):
        mine = [r for r in rows if r["arm"] == arm]
        for r in mine:
            table.add_row(
                r["arm"],
                str(r["subject"]),
                r["split"],
                str(r["recordings"]),
                str(r["windows"]),
                *map(str, r["per_class"]),
            )
        for split in ("train", "test", "all"):
            part = [r for r in mine if split in (r["split"], "all")]
            per_class = [sum(r["per_class"][c] for r in part) for c in range(len(CLASSES))]
            table.add_row(
                f"[bold]{arm}[/]",
                "all",
                f"[bold]{split}[/]",
                str(sum(r["recordings"] for r in part)),
                f"[bold]{sum(r['windows'] for r in part)}[/]",
                *map(str, per_class),
                end_section=split == "all",
            )
    table.caption = (
        f"test: subjects {', '.join(map(str, TEST_SUBJECTS))}, the test split when the arm is the target; "
        "train: the other subjects, the unlabelled target data. A source arm is used whole (all subjects)."
    )
    console.print(table)
    print(out)
    return 0
