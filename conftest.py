"""Root pytest configuration: the engine's plugin-test fixtures for every test folder, and how the
suite shares the machine's cores (pytest-xdist, `-n auto --dist loadgroup` in pyproject.toml)."""

pytest_plugins = ["distill_engine.testing.pytest_plugin"]

import os  # noqa: E402

import pytest  # noqa: E402

# `-n auto` starts one worker per usable CPU, and at most this many: every worker holds PyTorch and
# MindSpore (2-3 GB with a compiled graph or two), and the heaviest tests start processes of their own.
MAX_WORKERS = 4


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config):
    return max(1, min(_usable_cpus(), MAX_WORKERS))


def pytest_configure(config):
    """In a worker of an xdist run, the frameworks' thread pools share the cores with the other
    workers: OMP_NUM_THREADS (read by PyTorch and MindSpore when they load, and by every process a
    test starts) is the worker's share of the CPUs, unless the environment already sets it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, _usable_cpus() // workers))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Under xdist: the tests of a module that share a module-scoped fixture (a tiny run, a trained
    student, an installed plugin) form one xdist_group, so that one worker computes the fixture
    once and runs them all, as one process does; every other test goes to whichever worker is free."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    parent: dict[tuple[str, str], tuple[str, str]] = {}  # union-find over (module, fixture)

    def find(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        names = sorted(name for name, defs in (info.name2fixturedefs.items() if info else ())
                       if defs and defs[-1].scope == "module")
        if names:
            keys = [(item.nodeid.split("::")[0], name) for name in names]
            for key in keys[1:]:
                parent[find(key)] = find(keys[0])
            shared[item] = keys[0]
    for item, key in shared.items():
        module, fixture = find(key)
        item.add_marker(pytest.mark.xdist_group(f"{module}::{fixture}"))


@pytest.fixture(autouse=True, scope="session")
def _teacher_cache_in_a_temporary_folder(tmp_path_factory):
    """Runs in tests cache their teachers' outputs (teacher_cache = "auto" is the default) under a
    folder of the session, never in the user's ~/.cache."""
    from distill_engine.teacher_cache import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("teacher-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old
