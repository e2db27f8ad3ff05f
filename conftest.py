"""Root pytest configuration: the engine's plugin-test fixtures for every test folder."""

pytest_plugins = ["distill_engine.testing.pytest_plugin"]
