"""TOML config files as layers: a preset names its ``base`` (a documented base, method overlays) and states what differs.

A file may say ``base = "base/epic"`` or ``base = ["base/feature-benchmark", "methods/mmir-rank"]``:
names without ``.toml`` are files under ``experiments/configs/``, names ending in ``.toml`` are paths
relative to the file. Bases are merged first, in order, then the file's own keys, then ``--set``
overrides. Sections (``[stage2]``, ...) merge key by key; a value, inline tables included
(``objectives = {adversarial = 1.0}``), replaces the value below it whole; ``plugins`` accumulate.

Every dotted key remembers the layer that set it last, which ``mmir config show`` prints. This
module knows files and tables only; :mod:`experiments.config` turns the merged table into a
validated :class:`~experiments.config.RunConfig`.
"""

from __future__ import annotations

import argparse
import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "METHOD_METADATA",
    "ConfigError",
    "Layers",
    "add_set_option",
    "config_label",
    "read_layers",
    "read_toml",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Keys of a method overlay that describe the method (for reports) rather than configure the run.
METHOD_METADATA = ("title", "citation", "tables", "order", "notes", "source_is_target")


class ConfigError(ValueError):
    """A configuration problem; the message names the file, the key and what was expected."""


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option every command shares (read by :func:`experiments.config.parse_overrides`)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def config_label(path: Path) -> str:
    """How provenance names a file: relative to ``experiments/configs`` when it lies there."""
    path = path.resolve()
    try:
        return str(path.relative_to(CONFIG_DIR))
    except ValueError:
        return str(path)


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file as a table; every error names the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (TOML files are UTF-8): byte {err.start} cannot be decoded"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


@dataclass
class Layers:
    """The merged table of a stack of layers and, per dotted key, the layer that set it."""

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    source_is_target: bool = False  # a method overlay asked for data.source = data.target (supervised target)

    def set(self, dotted: str, value: Any, label: str) -> None:
        """Set one dotted key (``stage2.lr``) as layer ``label``; a missing section is created."""
        *parents, leaf = dotted.split(".")
        node = self.data
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parents[: i + 1])} is not a table (set by {self.origin.get(part, '?')})")
            node = child
        if leaf == "plugins" and not parents and isinstance(value, list):
            value = list(node.get("plugins", [])) + [p for p in value if p not in node.get("plugins", [])]
        node[leaf] = copy.deepcopy(value)
        self.origin[dotted] = label

    def merge(self, table: dict[str, Any], label: str) -> None:
        """Merge a file's table: sections key by key, other values whole."""
        for key, value in table.items():
            if isinstance(value, dict):  # a section: [stage2], [agents], ...
                for sub, v in value.items():
                    self.set(f"{key}.{sub}", v, label)
            else:
                self.set(key, value, label)


def _base_path(name: Any, parent: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{parent}: base must name a file (e.g. "base/epic" or "../mine.toml"), got {name!r}')
    return (parent / name) if name.endswith(".toml") else CONFIG_DIR / f"{name}.toml"


def _rename_agent_modalities(table: dict[str, Any], modalities: list[str]) -> dict[str, Any]:
    """Overlays name agents by RGB and flow; on other data (sensors) "rgb"/"flow" mean the 1st/2nd modality."""
    agents = table.get("agents")
    if not isinstance(agents, dict) or modalities[:2] == ["rgb", "flow"] or len(modalities) < 2:
        return table
    rename = {"rgb": modalities[0], "flow": modalities[1]}
    table = copy.deepcopy(table)
    for key in ("s_agents", "t_agents"):
        if isinstance(table["agents"].get(key), list):
            table["agents"][key] = [rename.get(m, m) if isinstance(m, str) else m for m in table["agents"][key]]
    return table


def _resolve_plugin_paths(table: dict[str, Any], folder: Path) -> None:
    """Plugin files are relative to the TOML that names them."""
    if isinstance(table.get("plugins"), list):
        table["plugins"] = [
            str((folder / p).resolve()) if isinstance(p, str) and p.endswith(".py") and not Path(p).is_absolute() else p
            for p in table["plugins"]
        ]


def apply_file(layers: Layers, path: Path, _seen: tuple[Path, ...] = ()) -> None:
    """Merge ``path`` (after its bases) into ``layers``."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(config_label(p) for p in (*_seen, path))
        raise ConfigError(f"{path}: base files form a cycle ({chain})")
    table = read_toml(path)
    bases = table.pop("base", [])
    for name in [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else [bases]:
        apply_file(layers, _base_path(name, path.parent), (*_seen, path))
    is_overlay = any(k in table for k in METHOD_METADATA)
    if table.pop("source_is_target", False):
        layers.source_is_target = True
    for key in METHOD_METADATA:
        table.pop(key, None)
    if is_overlay:
        modalities = layers.data.get("model", {}).get("modalities", ["rgb", "flow"])
        table = _rename_agent_modalities(table, list(modalities) if isinstance(modalities, list) else ["rgb", "flow"])
    _resolve_plugin_paths(table, path.parent)
    layers.merge(table, config_label(path))


def read_layers(path: str | Path) -> Layers:
    """The merged layers of a config file and its bases."""
    layers = Layers()
    apply_file(layers, Path(path))
    return layers
