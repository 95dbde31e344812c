"""User code that registers parts (objectives, refiners, strategies, agents, hooks) before a config is read.

A config (or a method overlay) lists ``plugins = ["my_objective.py", "package.module"]``: files are
imported by path (relative to the TOML that names them), anything else as a module. Each is imported
once per process, so registering at import time is safe.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_LOADED: dict[str, ModuleType] = {}


class PluginError(ValueError):
    """A plugin that cannot be found or fails on import; the message names it."""


def import_plugin(spec: str, relative_to: Path | None = None) -> ModuleType:
    """Import ``spec`` (a ``.py`` file, relative to ``relative_to`` when not absolute, or a module name)."""
    if spec.endswith(".py"):
        path = Path(spec).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        path = path.resolve()
        key = str(path)
        if key in _LOADED:
            return _LOADED[key]
        if not path.is_file():
            raise PluginError(f"plugin {spec!r}: no such file {path}")
        name = f"mmir_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise PluginError(f"plugin {path} failed on import: {type(err).__name__}: {err}") from err
        _LOADED[key] = module
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as err:
        raise PluginError(f"plugin {spec!r}: cannot import it ({err})") from err


def import_plugins(specs: list[str], relative_to: Path | None = None) -> list[ModuleType]:
    return [import_plugin(s, relative_to) for s in specs]
