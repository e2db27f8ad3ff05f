"""The loss registry: every loss kind and its per-backend implementations, filled through the hooks.

Built lazily, once, from every registered plugin (the built-in losses register through the same
`register_losses` hook as a loss plugin, see `distill_engine.losses.builtin`). Unknown names are
one clear error listing the registered ones.
"""

from __future__ import annotations

from collections.abc import Callable

from distill_engine.errors import BackendError, RecipeError, unknown_name
from distill_engine.losses.definition import LossDefinition
from distill_engine.registries import ImplementationRegistry

_definitions: dict[str, LossDefinition] | None = None
_owners: dict[str, str] = {}
_seen_plugins: frozenset = frozenset()


def _refresh() -> None:
    """Collect anew when the set of registered plugins changed (tests register and unregister
    plain plugin objects; a run registers nothing after loading the entry points)."""
    global _definitions, _seen_plugins
    from distill_engine.plugins import load_plugins, pm

    load_plugins()
    current = frozenset(id(p) for p in pm.get_plugins())
    if current != _seen_plugins:
        _definitions, _seen_plugins = None, current
        _owners.clear()


def loss_definitions() -> dict[str, LossDefinition]:
    """Every registered loss kind by name, in registration order (built-ins first)."""
    global _definitions
    _refresh()
    if _definitions is None:
        from distill_engine.plugins import pm

        found: dict[str, LossDefinition] = {}
        owners: dict[str, str] = {}
        for impl in pm.hook.register_losses.get_hookimpls():  # registration order
            plugin = pm.get_name(impl.plugin) or ""

            def register(definition: LossDefinition, _p: str = plugin) -> None:
                if not isinstance(definition, LossDefinition):
                    raise BackendError(f"plugin {_p}: register_losses must register LossDefinition objects, "
                                       f"got {type(definition).__name__}")
                if definition.name in found:
                    raise BackendError(f'loss "{definition.name}" registered twice (by {owners[definition.name]} '
                                       f"and {_p})")
                found[definition.name] = definition
                owners[definition.name] = _p

            impl.function(register=register)
        _definitions = found
        _owners.update(owners)
    return _definitions


def loss_names() -> tuple[str, ...]:
    return tuple(loss_definitions())


def get_loss(name: str, where: str = "kind") -> LossDefinition:
    """The definition of `name`; an unknown name is a `RecipeError` naming `where` and listing the kinds."""
    definitions = loss_definitions()
    if name not in definitions:
        raise RecipeError(f"{where}: " + unknown_name("loss", name, definitions))
    return definitions[name]


def owner(name: str) -> str:
    loss_definitions()
    return _owners.get(name, "")


IMPLEMENTATIONS = ImplementationRegistry("register_loss_implementations", "loss",
                                         "a loss plugin adds one through register_loss_implementations")


def implemented_on(name: str) -> tuple[str, ...]:
    """The backends that have an implementation of loss `name` (sorted)."""
    return IMPLEMENTATIONS.implemented_on(name)


def has_implementation(name: str, backend: str) -> bool:
    return IMPLEMENTATIONS.has(name, backend)


def implementation(name: str, backend: str) -> Callable:
    """The function that computes loss `name` on `backend` ("module:attr" strings imported now)."""
    return IMPLEMENTATIONS.get(name, backend)


def missing_message(name: str, backend: str) -> str:
    return IMPLEMENTATIONS.missing_message(name, backend)
