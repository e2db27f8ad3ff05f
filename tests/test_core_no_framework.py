"""The core never imports a framework: importing every core module leaves torch and mindspore out."""

import subprocess
import sys


def test_import_core_leaves_frameworks_out():
    code = (
        "import sys, distill_engine, distill_engine.recipe, distill_engine.runner, distill_engine.cli, "
        "distill_engine.checkpoint, distill_engine.reference, distill_engine.data, distill_engine.graph, "
        "distill_engine.plugins, distill_engine.augment.mlm, distill_engine.augment.job, "
        "distill_engine.augment.recipe, distill_engine.data.tasks, distill_engine.export, "
        "distill_engine.predict, distill_engine.api, "
        "distill_engine.report.rundata, "
        "distill_engine.report.models, distill_engine.report.plots, distill_engine.report.markdown, "
        "distill_engine.tensorboard_log, distill_engine.metrics_log\n"
        "distill_engine.run, distill_engine.load, distill_engine.phase_losses  # the API's lazy names\n"
        "print(' '.join(m for m in ('torch', 'mindspore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported {out.stdout.strip()}"


def test_listing_backends_does_not_import_frameworks():
    code = (
        "import sys\nfrom distill_engine.plugins import backend_registry\nbackend_registry()\n"
        "print(' '.join(m for m in ('torch', 'mindspore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"plugin entry points imported {out.stdout.strip()}"


def test_import_distill_engine_is_light():
    """`import distill_engine` loads neither the API's modules nor the tokenizer library: they come
    on first use of `distill_engine.run` / `load` / `phase_losses`."""
    code = ("import sys, distill_engine\n"
            "print(' '.join(m for m in ('distill_engine.api', 'distill_engine.runner', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
