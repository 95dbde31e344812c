""":class:`Registry`: a table of what a config or a call can name (datasets, models, objectives, agents, ...).

Every name table of the project is one (``experiments.registries``, ``agents.registry``,
``agents.stepwise``); it lives in the lowest package so that every layer can hold one. Not to be
confused with :mod:`features.registry_files`, which fetches data files from *package* registries.

An entry is the object itself (a function or a class) or a lazy ``"module:attribute"`` string,
imported on first use so that naming a table does not import what its entries need (torch, SB3).
A table may also take the entry points of an installed-package group (``importlib.metadata``),
loaded on its first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T", bound=Callable[..., Any])
#: What a table stores before first use: a ``"module:attribute"`` string or an installed entry point.
Lazy = str | EntryPoint


class UnknownNameError(KeyError):
    """A name that a :class:`Registry` does not hold; the message names the key and lists the choices.

    A KeyError (callers catch it as one) whose ``str`` is the plain message, not its ``repr``.
    """

    def __init__(self, message: str, key: str = "", name: Any = None, choices: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key, self.name, self.choices = key, name, choices

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (worker processes re-raise it)
        return type(self), (self.args[0], self.key, self.name, self.choices)

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> entries ``T``, each registered once unless replaced on purpose.

    :param what: what an entry is, for messages ("refiner", "step-wise agent").
    :param key: the config key (or argument) whose value is a name here ("refinement.policy"), for
        the unknown-name message.
    :param entries: the built-in entries, registered in order.
    :param entry_point_group: installed packages' entry points of this group join the table on its
        first lookup (``in``, iteration, ``len``, :meth:`resolve`); a name registered in code wins.
    """

    def __init__(
        self,
        what: str,
        key: str,
        entries: Mapping[str, T | str] | None = None,
        *,
        entry_point_group: str | None = None,
    ) -> None:
        self.what, self.key, self.entry_point_group = what, key, entry_point_group
        self._entries: dict[str, T | Lazy] = {}
        self._entry_points_loaded = entry_point_group is None
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: T | str | EntryPoint, overwrite: bool = False) -> None:
        """Make ``name`` resolve to ``entry`` (a callable, a ``"module:attribute"`` string or an entry point).

        A taken name needs ``overwrite=True``: a plugin imported twice, or two plugins choosing one
        name, should say so rather than silently replace the first.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} name must be a non-empty string, got {name!r}")
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            if not module or not attribute:
                raise ValueError(f"{self.what} {name!r}: a lazy entry is 'module:attribute', got {entry!r}")
        elif not isinstance(entry, EntryPoint) and not callable(entry):
            raise TypeError(
                f"{self.what} {name!r} must be callable or a 'module:attribute' string, got {type(entry).__name__}"
            )
        if name in self._entries and not overwrite:
            raise ValueError(f"a {self.what} named {name!r} is already registered (pass overwrite=True to replace it)")
        self._entries[name] = entry

    def resolve(self, name: str, key: str | None = None) -> T:
        """The entry of ``name``, imported on first use; :class:`UnknownNameError` names ``key`` (default: the table's) and the choices."""
        self._load_entry_points()
        if not isinstance(name, str) or name not in self._entries:
            choices = tuple(sorted(self._entries))
            key = key or self.key
            raise UnknownNameError(
                f"{key} {name!r} is not known; choose one of {', '.join(choices)}", key, name, choices
            ) from None
        entry = self._entries[name]
        if isinstance(entry, (str, EntryPoint)):
            entry = self._import(name, entry)
            self._entries[name] = entry
        return entry

    def pop(self, name: str, default: Any = None) -> T | Lazy | Any:
        """Remove ``name`` and return its entry (``default`` when absent): undoes a test's or a session's registration."""
        return self._entries.pop(name, default)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load_entry_points()
        return sorted(self._entries)

    def in_registration_order(self) -> list[str]:
        """Names in the order they were registered (built-ins first); where order carries meaning, e.g. the
        order objectives' terms join the graph."""
        self._load_entry_points()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, key={self.key!r}, names={sorted(self._entries)})"

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            self._entries.setdefault(ep.name, ep)

    def _import(self, name: str, entry: Lazy) -> T:
        try:
            if isinstance(entry, EntryPoint):
                return entry.load()
            module, _, attribute = entry.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            return obj
        except (ImportError, AttributeError) as err:
            spec = entry.value if isinstance(entry, EntryPoint) else entry
            raise ImportError(f"{self.what} {name!r} is {spec!r}, which does not import: {err}") from err
