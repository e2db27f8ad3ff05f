"""The engine's backend conformance suite (distill_engine.testing.suite) run for the MindSpore backend,
with its fused CPU kernels (the default on a CPU) and without them."""

import os

import pytest

from distill_engine.testing.suite import BackendConformance


class TestMindSporeConformance(BackendConformance):
    backend_name = "mindspore"
    resume_examples = 2  # each example compiles a teacher graph and two step graphs (~10 s)


class TestMindSporeConformanceWithBuiltinOps(BackendConformance):
    """The same checks with the fused CPU kernels turned off (DISTILL_ENGINE_MS_FUSED=0): the path a
    machine without a C++ compiler, or a GPU or Ascend device, runs."""

    backend_name = "mindspore"
    resume_examples = 2

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def builtin_ops(cls):
        from distill_engine_mindspore import fused

        saved = os.environ.get(fused.FUSED_ENV)
        os.environ[fused.FUSED_ENV] = "0"
        yield
        if saved is None:
            del os.environ[fused.FUSED_ENV]
        else:
            os.environ[fused.FUSED_ENV] = saved
