"""pytest fixtures for plugin tests: `register_plugin` registers plain plugin objects for one test.

Enable with `pytest_plugins = ["distill_engine.testing.pytest_plugin"]` in a root conftest.py.
Entry-point autoload is off while a test registers its own plugins, and everything is undone in
`finally`, so tests never leak plugins into each other.
"""

from __future__ import annotations

import pytest

from distill_engine import plugins


@pytest.fixture
def register_plugin():
    registered = []
    was_loaded = plugins._loaded
    plugins.set_autoload(False)

    def register(obj, name=None):
        plugins.pm.register(obj, name=name)
        registered.append(obj)
        plugins._instances.clear()
        return obj

    try:
        yield register
    finally:
        for obj in registered:
            plugins.pm.unregister(obj)
        plugins._instances.clear()
        plugins.set_autoload(True)
        plugins._loaded = was_loaded
