"""The plugin manager: loads entry points lazily and once, and keeps the registries they fill.

Installed plugins are entry points in the group "distill_engine.plugins" (any plugin: losses,
readers, backends) or "distill_engine.backends" (the backends' historical group; both are read).
Set DISTILL_ENGINE_PLUGINS to a comma-separated list of entry-point names to load only those
(empty string: none). Tests turn autoload off and register plain objects instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from distill_engine import hookspecs
from distill_engine.errors import BackendError, unknown_name

ENTRY_POINT_GROUP = "distill_engine.backends"
ENTRY_POINT_GROUPS = (ENTRY_POINT_GROUP, "distill_engine.plugins")

pm = pluggy.PluginManager("distill_engine")
pm.add_hookspecs(hookspecs)
# built-in parts register through the same hooks as installed plugins
from distill_engine import numpy_backend  # noqa: E402
from distill_engine.losses import builtin as builtin_losses  # noqa: E402
from distill_engine.tasks import builtin as builtin_tasks  # noqa: E402

pm.register(numpy_backend, name="numpy")
pm.register(builtin_losses, name="builtin-losses")
pm.register(builtin_tasks, name="builtin-tasks")
_loaded = False
_autoload = True


@attrs.define
class BackendEntry:
    name: str
    factory: Callable[[], Any]
    description: str = ""
    plugin: str = ""
    instance: Any = None


def set_autoload(enabled: bool) -> None:
    """Turn entry-point loading on or off (tests turn it off before registering their own plugins)."""
    global _autoload
    _autoload = enabled


def load_plugins() -> None:
    """Load the installed entry points once (restricted by DISTILL_ENGINE_PLUGINS when set)."""
    global _loaded
    if _loaded or not _autoload:
        return
    _loaded = True
    allowed = os.environ.get("DISTILL_ENGINE_PLUGINS")
    names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in (ep for group in ENTRY_POINT_GROUPS for ep in metadata.entry_points(group=group)):
        if names is not None and ep.name not in names:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the whole engine down
            print(f"warning: plugin {ep.name} ({ep.value}) failed to load: {exc}", file=sys.stderr)
            continue
        pm.register(plugin, name=ep.name)


def backend_registry() -> dict[str, BackendEntry]:
    """All registered backends by name (loads plugins on first use)."""
    load_plugins()
    entries: dict[str, BackendEntry] = {}
    for impl in pm.hook.register_backends.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or ""

        def register(name: str, factory: Callable[[], Any], description: str = "", _p=plugin_name) -> None:
            if name in entries:
                raise BackendError(f'backend "{name}" registered twice (by {entries[name].plugin} and {_p})')
            entries[name] = BackendEntry(name, factory, description, _p)

        impl.function(register=register)
    return entries


_instances: dict[tuple[str, int], Any] = {}


def get_backend(name: str) -> Any:
    """The backend called `name`, created on first use; unknown names list the available ones."""
    entries = backend_registry()
    if name not in entries:
        raise BackendError(unknown_name("backend", name, entries) +
                           ("" if entries else " (install distill-engine-torch or distill-engine-mindspore)"))
    entry = entries[name]
    key = (name, id(entry.factory))
    if key not in _instances:
        try:
            _instances[key] = entry.factory()
        except ImportError as exc:
            raise BackendError(f'backend "{name}" cannot start: {exc}') from None
    return _instances[key]


def weight_readers() -> dict[str, Callable]:
    """Weight-file readers by suffix (".bin", ".ckpt", ...), from every plugin."""
    load_plugins()
    readers: dict[str, Callable] = {}

    def register(suffix: str, reader: Callable, description: str = "") -> None:
        readers.setdefault(suffix, reader)

    pm.hook.register_weight_readers(register=register)
    return readers
