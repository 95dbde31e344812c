"""The paper's methods, baselines and ablations: the overlay files of ``experiments/configs/methods/``.

A method is one TOML overlay: the config keys it sets on top of a base run (a domain pair, a data
set, a budget) and how reports name it (``title``, ``citation``, the paper ``tables`` it belongs
to, its row ``order``). Built-in methods and a user's are the same thing: ``mmir train BASE.toml
--method mmd`` applies ``methods/mmd.toml``, ``--method my-method.toml`` applies a file of your own,
and a preset lists overlays in its ``base``. A method's losses, step strategy and evaluation hooks
are registry entries it names (``stage2.objectives``, ``stage2.strategy``, ``evaluation.hooks``).

Which paper table a method belongs to decides where ``mmir report`` puts it: Table 1 compares
methods, Table 2 ablates the agents, Table 3 the instance refinement.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, RunConfig, from_dict, validate
from experiments.config_layers import CONFIG_DIR, Layers, apply_file, read_toml

__all__ = ["METHODS", "METHODS_DIR", "Method", "apply_method", "get_method", "methods"]

METHODS_DIR = CONFIG_DIR / "methods"


@dataclass(frozen=True)
class Method:
    """One row of the paper's tables, read from its overlay file.

    :param name: the run's ``method`` label (the file's ``method``, else its stem).
    :param overrides: dotted config keys the overlay sets.
    :param tables: paper tables (1, 2, 3) the method appears in.
    :param source_is_target: train on the target's labels (the supervised upper bound).
    """

    name: str
    title: str
    citation: str
    overrides: dict[str, Any]
    path: Path
    tables: tuple[int, ...] = (1,)
    order: int = 1000
    source_is_target: bool = False

    @property
    def adversarial(self) -> bool:
        """Whether stage 2 trains the adversarial objective (eq. 8)."""
        return "adversarial" in self.overrides.get("stage2.objectives", {})

    @property
    def refinement(self) -> bool:
        """Whether stage 2 refines the half-batches (the agents or a control)."""
        return bool(self.overrides.get("stage2.refinement", False))


def read_method(path: str | Path) -> Method:
    """The method of an overlay file (the layout of ``experiments/configs/methods/*.toml``)."""
    path = Path(path)
    data = read_toml(path, "method overlay")
    meta = {k: data.pop(k) for k in ("title", "citation", "tables", "order", "notes", "source_is_target") if k in data}
    name = str(data.pop("method", path.stem))
    data.pop("base", None)
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            overrides.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            overrides[key] = value
    return Method(
        name,
        str(meta.get("title", name)),
        str(meta.get("citation", f"method overlay {path}")),
        overrides,
        path,
        tables=tuple(meta.get("tables", (1,))),
        order=int(meta.get("order", 1000)),
        source_is_target=bool(meta.get("source_is_target", False)),
    )


@cache
def methods() -> dict[str, Method]:
    """Every built-in method, in the order reports print them."""
    found = [read_method(p) for p in sorted(METHODS_DIR.glob("*.toml"))]
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


METHODS: dict[str, Method] = methods()  # 28 small files, read once at import


def get_method(name: str) -> Method:
    """The built-in method ``name``, or a ConfigError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def apply_method(cfg: RunConfig, method: str | Method) -> RunConfig:
    """A validated copy of ``cfg`` with the method's overlay applied; ``cfg.method`` records the name.

    ``method``: a built-in name, a :class:`Method`, or the path of a TOML overlay of your own.
    """
    if isinstance(method, str):
        method = read_method(method) if method.endswith(".toml") else get_method(method)
    layers = Layers(copy.deepcopy(cfg.to_dict()))
    apply_file(layers, method.path)
    layers.set("method", method.name, str(method.path))
    if layers.source_is_target:
        layers.data["data"]["source"] = layers.data["data"]["target"]
    try:
        return validate(from_dict(RunConfig, layers.data))
    except ConfigError as err:
        raise ConfigError(f"method {method.name} ({method.path}): {err}") from None
