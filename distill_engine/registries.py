"""Registries that plugins fill through a `register(obj)` hook, collected once per set of plugins.

Task types and metrics (and loss kinds, in their own module) are each a registry of named
objects: every plugin's hook is called with a `register` callback, the names are checked in one
place (a name registered twice is an error naming both plugins; an unknown name lists the known
ones), and the collection is made anew only when the set of registered plugins changed (tests
register and unregister plain plugin objects; a run registers nothing after loading).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from distill_engine.errors import BackendError, DistillError, unknown_name


def _plugin_set() -> frozenset:
    """The registered plugins (entry points loaded first): a registry collects anew when they change."""
    from distill_engine.plugins import load_plugins, pm

    load_plugins()
    return frozenset(id(p) for p in pm.get_plugins())


class HookRegistry:
    """Objects registered through the hook `hook` (each with a `.name`), by name, in registration order.

    `what` is how users call one ("task type", "metric"); `check(obj)` returns an error message
    for an object the hook must refuse, or None."""

    def __init__(self, hook: str, what: str, check: Callable[[Any], str | None] | None = None):
        self.hook = hook
        self.what = what
        self.check = check
        self._found: dict[str, Any] | None = None
        self._owners: dict[str, str] = {}
        self._seen: frozenset = frozenset()

    def all(self) -> dict[str, Any]:
        """Every registered object by name (plugins are loaded on first use)."""
        current = _plugin_set()
        if self._found is None or current != self._seen:
            from distill_engine.plugins import pm

            found: dict[str, Any] = {}
            owners: dict[str, str] = {}
            for impl in getattr(pm.hook, self.hook).get_hookimpls():
                plugin = pm.get_name(impl.plugin) or ""

                def register(obj: Any, _p: str = plugin) -> None:
                    problem = self.check(obj) if self.check else None
                    if problem:
                        raise BackendError(f"plugin {_p}: {self.hook}: {problem}")
                    name = obj.name
                    if name in found:
                        raise BackendError(f'{self.what} "{name}" registered twice (by {owners[name]} and {_p})')
                    found[name] = obj
                    owners[name] = _p

                impl.function(register=register)
            self._found = found  # get_hookimpls() is in registration order: built-ins first
            self._owners = owners
            self._seen = current
        return self._found

    def get(self, name: str, error: type[DistillError], where: str = "") -> Any:
        """The object called `name`; an unknown name is `error` listing the registered ones."""
        found = self.all()
        if name not in found:
            raise error((f"{where}: " if where else "") + unknown_name(self.what, name, found))
        return found[name]

    def owner(self, name: str) -> str:
        """The plugin that registered `name` ("" when unknown)."""
        self.all()
        return self._owners.get(name, "")


class ImplementationRegistry:
    """Per-backend implementations registered through the hook `hook` as `register(name, backend,
    implementation)`: a callable, or a "module:attribute" string imported on first use (so a
    plugin need not import a framework when it loads). The first registration of a pair wins.
    `what` names the things ("loss", "model family") in messages; `adds` says how a plugin adds one."""

    def __init__(self, hook: str, what: str, adds: str):
        self.hook, self.what, self.adds = hook, what, adds
        self._found: dict[tuple[str, str], Any] = {}
        self._seen: frozenset | None = None

    def all(self) -> dict[tuple[str, str], Any]:
        current = _plugin_set()
        if current != self._seen:
            from distill_engine.plugins import pm

            found: dict[tuple[str, str], Any] = {}

            def register(name: str, backend: str, implementation: Callable | str) -> None:
                found.setdefault((name, backend), implementation)

            for impl in getattr(pm.hook, self.hook).get_hookimpls():
                impl.function(register=register)
            self._found, self._seen = found, current
        return self._found

    def implemented_on(self, name: str) -> tuple[str, ...]:
        """The backends that have an implementation of `name` (sorted)."""
        return tuple(sorted(b for (n, b) in self.all() if n == name))

    def has(self, name: str, backend: str) -> bool:
        return (name, backend) in self.all()

    def missing_message(self, name: str, backend: str) -> str:
        others = self.implemented_on(name)
        return (f'{self.what} "{name}" has no implementation for backend "{backend}" '
                f"(implemented for: {', '.join(others) if others else 'no backend'}; {self.adds})")

    def get(self, name: str, backend: str) -> Callable:
        """The implementation of `name` on `backend` (a string is imported now, once)."""
        found = self.all()
        if (name, backend) not in found:
            raise BackendError(self.missing_message(name, backend))
        impl = found[(name, backend)]
        if isinstance(impl, str):
            module, _, attr = impl.partition(":")
            try:
                impl = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise BackendError(f'{self.what} "{name}" on backend "{backend}": cannot import '
                                   f"{found[(name, backend)]} ({exc})") from None
            found[(name, backend)] = impl
        return impl
