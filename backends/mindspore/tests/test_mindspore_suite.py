"""The engine's backend conformance suite (distill_engine.testing.suite) run for the MindSpore backend,
with its fused CPU kernels (the default on a CPU) and, for the checks the kernels take part in,
without them.

MindSpore compiles a graph per model shape and per kind of step, 7-10 s each on two cores, and every
hypothesis example draws a new shape: the checks that build several trainers per example run fewer
examples here than on an eager backend (the suite's `*_examples` attributes)."""

import os

import pytest

from distill_engine.testing.suite import BackendConformance


class TestMindSporeConformance(BackendConformance):
    backend_name = "mindspore"
    resume_examples = 2  # each example compiles a teacher graph and two step graphs (~10 s)
    trainer_examples = 6  # the supplied-teacher-outputs check compiles three trainers per example
    gradient_examples = 2  # per loss kind: a trainer and its gradient graph each (the class below adds 2 more)
    head_examples = 1  # per head: a forward, a loss and a gradient graph


class TestMindSporeConformanceWithBuiltinOps(BackendConformance):
    """The checks the fused kernels (GELU, softmax, add + LayerNorm, thresholded MSE) take part in,
    with the kernels turned off (DISTILL_ENGINE_MS_FUSED=0): the path a machine without a C++
    compiler, or a GPU or Ascend device, runs. Forward taps, each loss's value and gradient and the
    AdamW steps go through every kernel and its gradient.

    Left to the fused class above, because no kernel decides their outcome: the supplied teacher
    outputs (the same graph with the teacher's taps fed in), resume (the trainer's state and RNG),
    the precisions (a float32 step is the AdamW check's), the trainer-state checks, the
    checkpoint round trip (no step at all) and each head's check (a head is a plain dense layer on
    the encoder's output, which the forward check here covers). Setting them to None keeps pytest
    from collecting them."""

    backend_name = "mindspore"
    trainer_examples = 6
    gradient_examples = 2
    # The loss kinds whose MindSpore implementation has a fused path (losses.FUSABLE: the
    # thresholded MSE kernel; embedding_mse is hidden_mse's function), and one logit loss for the
    # whole forward and backward through the built-in GELU, softmax and LayerNorm. Every other kind
    # (the logit, token and span losses: cross-entropies on the logits) computes the same ops with
    # the kernels on or off, and is checked kind by kind in the fused class above; here each cost a
    # trainer and a gradient graph (3.7 of the suite's worker-minutes for all 18 kinds).
    only_losses = ("attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy")

    test_teacher_outputs_supplied_in_the_batch = None
    test_resume_continues_exactly = None
    test_a_step_in_each_served_precision_stays_within_its_tolerance = None
    test_trainer_state_is_checked_on_load = None
    test_checkpoint_round_trip = None
    test_each_head = None

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
