"""Root pytest configuration: the engine's plugin-test fixtures for every test folder."""

pytest_plugins = ["distill_engine.testing.pytest_plugin"]

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _teacher_cache_in_a_temporary_folder(tmp_path_factory):
    """Runs in tests cache their teachers' outputs (teacher_cache = "auto" is the default) under a
    folder of the session, never in the user's ~/.cache."""
    import os

    from distill_engine.teacher_cache import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("teacher-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old
