"""The plugin manager: loads entry points lazily and once, and keeps the registries they fill.

Installed plugins are entry points in the group "distill_engine.plugins" (any plugin: losses,
readers, backends) or "distill_engine.backends" (the backends' historical group; both are read).
Set DISTILL_ENGINE_PLUGINS to a comma-separated list of entry-point names to load only those
(empty string: none). Tests turn autoload off and register plain objects instead.

The built-in plugins (the numpy reference backend, the built-in loss kinds) register through the
same hooks. They are named here as strings and imported by the plugin manager on first need (the
first registration of any plugin, or the first `load_plugins()`, which every hook caller runs),
never at this module's import: they import the graph and the losses, which reach back here. So
they are always registered, and registered first, autoload on or off.
"""

from __future__ import annotations

import importlib
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

# the built-in plugins: their names and the modules that implement them (imported on first need)
DEFAULT_PLUGINS = {"numpy": "distill_engine.numpy_backend", "builtin-losses": "distill_engine.losses.builtin",
                   "builtin-tasks": "distill_engine.tasks.builtin", "builtin-models": "distill_engine.models.builtin",
                   # the families on BERT's network, each in a room of its own
                   "roberta-family": "distill_engine.models.roberta",
                   "distilbert-family": "distill_engine.models.distilbert",
                   "electra-family": "distill_engine.models.electra"}


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, with the built-in plugins registered before any other."""

    _builtins_registered = False

    def register(self, plugin, name=None):
        self.register_builtins()
        return super().register(plugin, name=name)

    def register_builtins(self) -> None:
        """Import and register DEFAULT_PLUGINS, once."""
        if self._builtins_registered:
            return
        self._builtins_registered = True
        for name, module in DEFAULT_PLUGINS.items():
            if not self.has_plugin(name):
                super().register(importlib.import_module(module), name=name)


pm = PluginManager("distill_engine")
pm.add_hookspecs(hookspecs)
_loaded = False
_autoload = True


@attrs.define
class BackendEntry:
    name: str
    factory: Callable[[], Any]
    description: str = ""
    plugin: str = ""
    instance: Any = None
    # what `distill-engine backends` prints, found without importing the framework (or None); see
    # hookspecs.register_backends
    probe: Callable[[], BackendSummary | None] | None = None


@attrs.frozen
class BackendSummary:
    """A backend's `version()` and `available_devices()`, as a plugin's probe finds them."""

    version: str
    devices: tuple[str, ...]


def cpu_only_summary(framework: str, plugin_version: str, accelerators: tuple[str, ...]) -> BackendSummary | None:
    """A backend plugin's probe without importing its framework: the framework's version from its
    installed distribution and "cpu" alone, when the machine has no device file of `accelerators`
    ("gpu", "ascend") the framework could reach; None (start the backend: it says why it cannot, or
    counts the devices) when the framework is not installed or such a device may be there."""
    import importlib.util
    from importlib import metadata

    from distill_engine.device import accelerator_files_present

    if importlib.util.find_spec(framework) is None or any(accelerator_files_present(k) for k in accelerators):
        return None
    try:
        version = metadata.version(framework)
    except metadata.PackageNotFoundError:
        return None
    return BackendSummary(f"{plugin_version} ({framework} {version})", ("cpu",))


def set_autoload(enabled: bool) -> None:
    """Turn entry-point loading on or off (tests turn it off before registering their own plugins)."""
    global _autoload
    _autoload = enabled


def load_plugins() -> None:
    """Register the built-in plugins, then load the installed entry points once (restricted by
    DISTILL_ENGINE_PLUGINS when set; not while autoload is off)."""
    global _loaded
    pm.register_builtins()
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

        def register(name: str, factory: Callable[[], Any], description: str = "", probe=None, _p=plugin_name) -> None:
            if name in entries:
                raise BackendError(f'backend "{name}" registered twice (by {entries[name].plugin} and {_p})')
            entries[name] = BackendEntry(name, factory, description, _p, probe=probe)

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
