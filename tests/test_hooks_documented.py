"""Every hook is documented in docs/writing-a-backend.md and exercised by a test (datasette's rule)."""

import inspect
from pathlib import Path

import pytest

from distill_engine import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "distill_engine_spec")]


def test_there_are_hooks():
    assert {"register_backends", "register_weight_readers", "load_foreign_checkpoint"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_and_a_section(hook):
    assert len(inspect.getdoc(getattr(hookspecs, hook)) or "") > 80
    assert f"### {hook}\n" in (ROOT / "docs" / "writing-a-backend.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    tests = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("backends/*/tests/**/*.py")]
    users = [p for p in tests if p.name != Path(__file__).name and hook in p.read_text()]
    assert users, f"no test mentions hook {hook}"
