"""The engine's backend conformance suite (distill_engine.testing.suite) run for the MindSpore backend."""

from distill_engine.testing.suite import BackendConformance


class TestMindSporeConformance(BackendConformance):
    backend_name = "mindspore"
