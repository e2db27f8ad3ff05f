"""Registries that plugins fill through a `register(obj)` hook, collected once per set of plugins.

Task types and metrics (and loss kinds, in their own module) are each a registry of named
objects: every plugin's hook is called with a `register` callback, the names are checked in one
place (a name registered twice is an error naming both plugins; an unknown name lists the known
ones), and the collection is made anew only when the set of registered plugins changed (tests
register and unregister plain plugin objects; a run registers nothing after loading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill_engine.errors import BackendError, DistillError, unknown_name


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
        from distill_engine.plugins import load_plugins, pm

        load_plugins()
        current = frozenset(id(p) for p in pm.get_plugins())
        if self._found is None or current != self._seen:
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
