"""One typed registry of named extensions, filled by built-ins and by Python entry points alike.

A :class:`Registry` holds objects of one type under names: evaluator kinds
(``assay.evaluators``), judge providers (``assay.judges``), trace readers (``assay.readers``).
The built-ins register with the same :meth:`Registry.register` an extension uses; the
built-in module is imported on first use, then, on a miss, every entry point of the
registry's group is loaded (modelled on inspect_ai's ``_util/registry.py`` and
``_util/entrypoints.py``). A package adds to a registry from its ``pyproject.toml``::

    [project.entry-points."assay.evaluators"]
    sql = "my_package.kinds:SqlRunner"      # an object: registered under the entry point's name
    more = "my_package.more_kinds"          # a module: importing it registers (decorators)

An entry point that fails to load is logged and skipped, so a broken extension never
hides the built-ins; asking for its name raises :class:`~assay.exceptions.ConfigError`
with the cause.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import types
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeGuard, TypeVar

from assay.exceptions import ConfigError

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Named objects of one type; extended through the entry-point group ``group``.

    Args:
        group: the entry-point group, e.g. ``"assay.evaluators"``.
        what: what one entry is, for messages, e.g. ``"evaluator kind"``.
        accepts: tells whether an object may be registered (the registry's type check).
        builtins: module imported before the first lookup; it registers the built-ins.
    """

    def __init__(self, group: str, what: str, accepts: Callable[[object], TypeGuard[T]], builtins: str) -> None:
        self.group = group
        self.what = what
        self._accepts = accepts
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._lock = threading.RLock()
        self._builtins_loaded = False
        self._extensions_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call: ``register(name)(obj)``) that adds ``obj`` under ``name``.

        Raises:
            ConfigError: an invalid name, an object of the wrong type, or a name already taken
                by another object (registering the same object again is a no-op).
        """
        def add(obj: T) -> T:
            self._add(name, obj)
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered under ``name``, loading the group's entry points on a miss.

        Raises:
            ConfigError: no such name (the message lists the known names), or its entry point failed to load.
        """
        self._ensure_builtins()
        found = self._entries.get(name)
        if found is None:
            self._load_extensions()
            found = self._entries.get(name)
        if found is None:
            if name in self._broken:
                raise ConfigError(f"{self.what} {name!r} failed to load: {self._broken[name]}", self.group)
            raise ConfigError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())} (packages add "
                              f"more through the entry-point group {self.group!r})")
        return found

    def names(self) -> tuple[str, ...]:
        """Every registered name, built-ins first, in registration order (entry points loaded)."""
        return tuple(name for name, _ in self.items())

    def items(self) -> list[tuple[str, T]]:
        """Every ``(name, object)``, built-ins first, in registration order (entry points loaded)."""
        self._ensure_builtins()
        self._load_extensions()
        with self._lock:
            return list(self._entries.items())

    def _add(self, name: str, obj: object) -> None:
        if not _NAME.match(name):
            raise ConfigError(f"invalid {self.what} name {name!r}: letters, digits, '_', '.', '-'", self.group)
        if not self._accepts(obj):
            raise ConfigError(f"{self.what} {name!r}: {obj!r} is not a {self.what}", self.group)
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old is not obj:
                raise ConfigError(f"{self.what} {name!r} is already registered ({old!r})", self.group)
            self._entries[name] = obj

    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            with self._lock:
                importlib.import_module(self._builtins)
                self._builtins_loaded = True

    def _load_extensions(self) -> None:
        with self._lock:
            if self._extensions_loaded:
                return
            self._extensions_loaded = True
            for ep in entry_points(group=self.group):
                self._load(ep)

    def _load(self, ep: EntryPoint) -> None:
        try:
            obj = ep.load()
            if not isinstance(obj, types.ModuleType) and self._entries.get(ep.name) is not obj:
                self._add(ep.name, obj)
        except Exception as exc:  # noqa: BLE001 - a broken extension must not hide the others
            reason = f"{ep.value}: {type(exc).__name__}: {exc}"
            self._broken[ep.name] = reason
            log.warning("skipped %s entry point %r (%s)", self.group, ep.name, reason)
