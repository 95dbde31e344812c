"""The ``mmir`` command. Each sub-command lives in its own module with ``register(subparsers)``.

What sub-commands share is in :mod:`experiments.cli.common` (a sub-command never imports this
package module, which imports every sub-command).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from experiments.cli.common import CLIError, Interrupted, add_registry_fetch_options, sigterm_as_interrupt

__all__ = ["COMMANDS", "CLIError", "add_registry_fetch_options", "build_parser", "main"]

# Sub-command modules of this package, in the order ``mmir --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "train",
    "config",
    "sweep",
    "report",
    "study",
    "snapshot",
    "extract",
    "weights",
    "classify",
    "prepare_videos",
    "data",
)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version("mmir")
    except PackageNotFoundError:  # running from a source tree that was not installed
        pkg_version = "unknown"
    parser = argparse.ArgumentParser(
        prog="mmir",
        description="Multi-modal Instance Refinement: environments, agents and co-training for cross-domain action recognition.",
    )
    parser.add_argument("--version", action="version", version=f"mmir {pkg_version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"experiments.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # a warning is one line a user reads (a repaired metrics log, a rewritten config.json), not a source excerpt
    warnings.formatwarning = lambda message, *_a, **_k: f"mmir {args.command}: warning: {message}\n"
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: no temporary file is left behind
            return int(args.func(args) or 0)
    except CLIError as err:
        print(f"mmir {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"mmir {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        print(f"mmir {args.command}: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
