"""The conformance suite for the example loss plugin, on both backends (run by tests/test_loss_plugin.py
in a process where the plugin is installed; a loss plugin's author runs the same in their repo)."""

from distill_engine.testing.suite import BackendConformance


class TestJsdOnTorch(BackendConformance):
    backend_name = "torch"
    only_losses = ("jsd_logits",)


class TestJsdOnMindSpore(BackendConformance):
    backend_name = "mindspore"
    only_losses = ("jsd_logits",)
    trainer_examples = 3
