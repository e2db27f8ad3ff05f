"""Conformance checks of a backend against the numpy reference: taps, losses, training steps.

A backend package runs these from its own tests (see backends/torch/tests). Tolerances live here,
in one place: a float32 backend against the float64 reference differs by float32 rounding
(~6e-8 relative per operation) accumulated over a few hundred summed terms per matmul and a
few layers; 1e-5 relative and absolute leaves a margin of ~10x over what is observed while
still catching any real formula error (those show at 1e-3 or more). Attention scores carry the
-10000 mask, where 1e-5 relative is 0.1 absolute: masked entries are compared relatively.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill_engine import reference
from distill_engine.bert import BertConfig
from distill_engine.graph import DistillGraph, Taps

RTOL = 1e-5
ATOL = 1e-5


def assert_close(actual, expected, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    """np.testing.assert_allclose with a message naming the tap or loss that differs."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != reference {expected.shape}")
    diff = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    if not np.all(diff <= bound):
        worst = np.unravel_index(np.argmax(diff - bound), diff.shape)
        raise AssertionError(f"{what}: differs from the reference by {diff[worst]:.3g} at {worst} "
                             f"(backend {actual[worst]:.6g}, reference {expected[worst]:.6g}; "
                             f"rtol {rtol}, atol {atol})")


def check_taps(taps: Taps, config: BertConfig, params, batch) -> None:
    """Every tap of a backend's forward equals the reference's."""
    expected = reference.forward(config, params, batch).named()
    actual = taps.named()
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise AssertionError(f"taps missing from the backend: {', '.join(missing)}")
    for name, value in expected.items():
        assert_close(actual[name], value, f"tap {name}")


def check_losses(actual: dict[str, float], graph: DistillGraph, student_config: BertConfig, student_params,
                 teacher_config: BertConfig | None, teacher_params, batch, kinds: Sequence[str] | None = None) -> None:
    """Each loss term (and the weighted total) equals the reference's."""
    expected = reference.losses(graph, student_config, student_params, teacher_config, teacher_params, batch)
    for kind in kinds or expected:
        if kind not in actual:
            raise AssertionError(f"loss {kind} missing from the backend's result")
        assert_close(actual[kind], expected[kind], f"loss {kind}")
