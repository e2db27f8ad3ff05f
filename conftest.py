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


# The heaviest test files on two cores, heaviest first (`slow` tests before all of them): under xdist
# they are handed out first, so that the last minutes of a run are short tests on every worker
# rather than one long test on one. A file not listed comes after these, in collection order; a test
# marked `after_the_rest` (it waits for what other tests leave) comes last.
HEAVY_FIRST = (
    "tests/e2e/test_data_parallel.py",
    "backends/mindspore/tests/test_mindspore_suite.py",
    "tests/e2e/test_resume.py",
    "tests/e2e/test_pipelines.py",
    "backends/mindspore/tests/",
    "tests/e2e/",
    "tests/parity/",
    "backends/torch/tests/",
)


def _weight_rank(item) -> tuple[int, int, int]:
    """(after_the_rest, not slow, the file's place in HEAVY_FIRST): smaller is handed out earlier."""
    path = item.nodeid.split("::")[0]
    rank = next((i for i, prefix in enumerate(HEAVY_FIRST) if path.startswith(prefix)), len(HEAVY_FIRST))
    return (1 if item.get_closest_marker("after_the_rest") else 0, 0 if item.get_closest_marker("slow") else 1, rank)


# Runs of many minutes (the README's quickstart whole, on each backend) are opt-in: `heavy` tests are
# skipped unless DISTILL_ENGINE_HEAVY=1, so that the one test command stays under 30 minutes.
HEAVY_ENV = "DISTILL_ENGINE_HEAVY"


def _heavy_wanted() -> bool:
    return os.environ.get(HEAVY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(config, items):
    """`heavy` tests are skipped unless DISTILL_ENGINE_HEAVY=1 (with that reason).

    Under xdist: the tests of a module that share a module-scoped fixture (a tiny run, a trained
    student, an installed plugin) form one xdist_group, so that one worker computes the fixture
    once and runs them all, as one process does; every other test goes to whichever worker is free.
    The heaviest tests come first (HEAVY_FIRST); every worker sorts the same collection the same way."""
    if not _heavy_wanted():
        skip = pytest.mark.skip(reason=f"heavy (minutes of real-data training): set {HEAVY_ENV}=1 to run it")
        for item in items:
            if item.get_closest_marker("heavy"):
                item.add_marker(skip)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (*_weight_rank(item), order[id(item)]))
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
    yield  # xdist's hook, and every other plugin's
    _xdist_groups_on_pytest_9_2(config, items)


def _xdist_groups_on_pytest_9_2(config, items):
    """xdist's loadgroup sends a test to its group's worker by the "@<group>" its hook appends to the
    test's node id; with pytest 9.2 (node ids kept in `Node._id`) pytest-xdist 3.8 sets an attribute
    pytest no longer reads, and every group is silently split. Append it here when it is missing."""
    if not getattr(config.option, "loadgroup", False):  # set on the workers of --dist loadgroup
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if not names:
            continue
        suffix = "@" + "_".join(names)
        if item.nodeid.endswith(suffix):
            continue  # xdist did it
        if hasattr(item, "_id"):  # pytest >= 9.2
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(item.nodeid + suffix)
        else:
            item._nodeid = item.nodeid + suffix


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
