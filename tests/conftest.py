"""Core test fixtures: entry-point autoload off, plain plugin objects registered and removed in finally."""

from __future__ import annotations

from pathlib import Path

import pytest


SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip naming what is missing (CI has it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data beside the checkout)")
    return path


class PlanOnlyBackend:
    """A backend that can be planned against but not run: enough for recipe and CLI checks
    without importing a framework in the core's tests."""

    name = "planonly"

    def version(self):
        return "0 (test)"

    def device_kinds(self):
        return ("cpu",)

    def available_devices(self):
        from distill_engine.device import Device

        return [Device("cpu")]

    def check_device(self, device):
        from distill_engine.backend import check_device_in

        check_device_in(self, device)


class PlanOnlyPlugin:
    from distill_engine.hookspecs import hookimpl

    @hookimpl
    def register_backends(self, register):
        register("planonly", PlanOnlyBackend, description="test")

    @hookimpl
    def register_loss_implementations(self, register):
        # plan() checks that the backend implements each loss of a recipe; planonly never trains
        register_builtin_losses_for(register, "planonly")


def register_builtin_losses_for(register, backend: str) -> None:
    """Give a test backend that never trains an entry for every built-in loss kind."""
    from distill_engine.losses.builtin import BUILTIN_LOSSES
    from distill_engine.tasks.token.losses import TOKEN_LOSSES

    for definition in BUILTIN_LOSSES + TOKEN_LOSSES:
        register(definition.name, backend, _never_called)


def _never_called(*_args):
    raise AssertionError("a test backend that plans only does not train")


@pytest.fixture
def planonly(register_plugin):
    register_plugin(PlanOnlyPlugin(), name="planonly")
    return "planonly"


def backend_installed(name: str) -> bool:
    """Whether a backend's distribution is installed (its entry point registers it)."""
    from distill_engine.plugins import backend_registry

    return name in backend_registry()


def pip_install_example(site: Path, example: Path, distribution: str) -> dict:
    """Install an example plugin under tests/ with pip into `site` (a folder of its own, found
    through its entry point as a user's installed plugin is), and return the environment that sees it."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(example)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert list(site.glob(f"{distribution}-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("DISTILL_ENGINE_PLUGINS", None)
    return env


def reduced_run_argv() -> list[str]:
    """The reduced SST-2 command exactly as docs/results.md shows it (`run ...`: so the page stays true)."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    block = re.search(r"<!-- reduced-run -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/results.md lost its reduced-run block"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    return argv[argv.index("run"):]


def run_command(argv, env, cwd, timeout=900):
    """A command in a subprocess with `env`, its output captured (the plugin tests' runs)."""
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
