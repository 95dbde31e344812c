"""``mmir config show PRESET``: a preset's resolved config, every key with the file (or override) it came from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.config_layers import add_set_option

EXAMPLES = """examples:
  mmir config show paper/D2-D1
  mmir config show experiments/configs/feature-benchmark/mmir-robust.toml --set seed=3
  mmir config show my-run.toml --json > resolved.json
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show a preset's resolved config and where each value came from",
        description="Presets are layers: a documented base per data kind (experiments/configs/base/), method "
        "overlays (experiments/configs/methods/) and the preset's own keys, then --set overrides. "
        "`show` prints every key of the resolved config with the layer that set it ('default': the "
        "dataclass default of experiments/config.py).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="print the resolved config", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    show.add_argument("preset", help="a TOML file, or a preset name under experiments/configs (e.g. paper/D2-D1)")
    add_set_option(show, "override a value (TOML syntax), as `mmir train --set`")
    show.add_argument("--json", action="store_true", help="print the resolved config as JSON (no provenance)")
    show.set_defaults(func=run)


def preset_path(name: str) -> Path:
    """A file path as given, else a preset name under ``experiments/configs`` (``.toml`` optional)."""
    from experiments.config import CONFIG_DIR

    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    return candidate if candidate.is_file() else path


def run(args: argparse.Namespace) -> int:
    from experiments.cli.common import CLIError
    from experiments.config import ConfigError, parse_overrides, resolve_config

    try:
        cfg, origin = resolve_config(preset_path(args.preset), parse_overrides(args.overrides))
    except ConfigError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    print(show_text(cfg.to_dict(), origin))
    return 0


def show_text(data: dict[str, Any], origin: dict[str, str]) -> str:
    """TOML-like lines, one per key, each with ``# from LAYER``."""
    lines: list[str] = []
    top = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    sections = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    for key, value in top:
        lines.append(f"{key} = {json.dumps(value)}  # {origin.get(key, 'default')}")
    for section, values in sections:
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}  # {origin.get(f'{section}.{key}', 'default')}")
    return "\n".join(lines)
