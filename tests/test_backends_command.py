"""`distill-engine backends` lists what it did (versions, devices, "unavailable") without importing
torch or MindSpore where a plugin's probe can say it exactly (it took 18 s importing both)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_engine.cli import main
from distill_engine.device import accelerator_files_present
from distill_engine.hookspecs import hookimpl
from distill_engine.plugins import BackendSummary

ROOT = Path(__file__).resolve().parents[1]


class _Backend:
    def version(self):
        return "9 (started)"

    def available_devices(self):
        from distill_engine.device import Device

        return [Device("cpu"), Device("gpu", 0)]


def _never_started():
    raise AssertionError("a backend whose probe answers is not started")


class _Plugin:
    @hookimpl
    def register_backends(self, register):
        register("probed", _never_started, description="answers", probe=lambda: BackendSummary("1 (probed)", ("cpu",)))
        register("unsure", _Backend, description="cannot tell", probe=lambda: None)
        register("plain", _Backend, description="no probe")


def test_a_probe_s_answer_is_printed_and_a_backend_without_one_is_started(register_plugin, capsys):
    register_plugin(_Plugin(), name="probes")
    assert main(["backends"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["probed"].split("devices: ")[1] == "cpu  (answers)" and "1 (probed)" in lines["probed"]
    assert "9 (started)" in lines["unsure"] and "devices: cpu, gpu:0  (cannot tell)" in lines["unsure"]
    assert "9 (started)" in lines["plain"] and "devices: cpu, gpu:0  (no probe)" in lines["plain"]


@pytest.mark.parametrize("name", ["torch", "mindspore"])
def test_a_built_in_backend_s_probe_says_what_the_started_backend_says(name):
    plugin = pytest.importorskip(f"distill_engine_{name}.plugin")
    summary = plugin._probe()
    if summary is None:
        pytest.skip("this machine has accelerator device files: the probe defers to the backend")
    backend = plugin._create()
    assert summary == BackendSummary(backend.version(), tuple(str(d) for d in backend.available_devices()))


def test_the_command_imports_no_framework_on_a_machine_without_accelerators():
    pytest.importorskip("distill_engine_torch")
    if accelerator_files_present("gpu") or accelerator_files_present("ascend"):
        pytest.skip("accelerator device files here: the frameworks count the devices")
    code = ("import sys; from distill_engine.cli import main; main(['backends']); "
            "print('imported:', sorted(m for m in ('torch', 'mindspore', 'scipy.stats') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "backends" / "torch"), str(ROOT / "backends" / "mindspore"),
         os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout
    assert out.splitlines()[-1] == "imported: []", out
    assert any(line.startswith("torch ") and "devices: cpu" in line for line in out.splitlines()), out
