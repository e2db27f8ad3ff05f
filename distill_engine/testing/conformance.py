"""Conformance checks of a backend against the numpy reference: taps, losses, training steps.

A backend package runs these from its own tests (see backends/torch/tests). Tolerances live here,
in one place (`PRECISION_TOLERANCES` for the reduced training precisions, below): a float32 backend against the float64 reference differs by float32 rounding
(~6e-8 relative per operation) accumulated over a few hundred summed terms per matmul and a
few layers; 1e-5 relative and absolute leaves a margin of ~10x over what is observed while
still catching any real formula error (those show at 1e-3 or more). Attention scores carry the
-10000 mask, where 1e-5 relative is 0.1 absolute: masked entries are compared relatively.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from distill_engine import reference
from distill_engine.bert import BertConfig
from distill_engine.graph import DistillGraph, Taps

RTOL = 1e-5
ATOL = 1e-5


@attrs.frozen
class PrecisionTolerance:
    """How far a training step in a reduced precision may be from float32 (`run.precision`).

    `rtol`/`atol`: each loss term of the step (and the total) against the float64 reference.
    `update`: the step's parameter update against the same backend's float32 step, as the relative
    L2 norm of the difference over every parameter, ||d_p - d_32|| / ||d_32||. The check runs
    AdamW's first step with eps = 1, far above every gradient, where the update is lr g / (|g| + 1)
    ~ lr g: linear in the gradient, so the norm measures the gradient's error (with a small eps the
    first step is lr sign(g), which flips on near-zero gradients at any precision).
    """

    rtol: float
    atol: float
    update: float


# The tolerances of every precision, in one place. Measured on the suite's tiny models (1-3 layers,
# widths 2-24, smooth activations; torch on CPU, MindSpore's float16 graph on CPU), the worst of
# 300 / 200 / 25 hypothesis examples is given for each, and each tolerance leaves a 3-4x margin:
PRECISION_TOLERANCES = {
    # float32 against float64: rounding of ~6e-8 per operation (the module docstring's RTOL/ATOL);
    # against the backend's own float32 run the update is the same computation (1e-4: the optimiser
    # check's tolerance, for Adam magnifying rounding of tiny gradients).
    "fp32": PrecisionTolerance(rtol=RTOL, atol=ATOL, update=1e-4),
    # bfloat16 keeps 8 significant bits: each rounding of a matmul operand errs by up to 2^-8 = 3.9e-3
    # relative, so taps agree to ~1e-2 after a few layers and a mean of squared differences to about
    # that (worst seen 6e-3 on O(1) terms); terms near zero (an MSE of near-equal taps, a regression
    # logit near its label) carry the absolute error of O(1) taps instead (worst seen 1.3e-4). The
    # gradient, hence the update, adds the backward's roundings (worst seen 1.2e-2).
    "bf16": PrecisionTolerance(rtol=2e-2, atol=2e-3, update=5e-2),
    # float16 keeps 11 significant bits, 3 more than bfloat16: 2^-11 = 4.9e-4 per rounding, so the
    # relative tolerances are bfloat16's / 8 (worst seen: 7e-4 on losses, 2e-3 on the update). The
    # absolute one stays near bfloat16's: MindSpore's float16 graph also rounds the classifier's
    # products, and the regression term's loss near zero erred by 3.6e-4.
    "fp16": PrecisionTolerance(rtol=2.5e-3, atol=1e-3, update=6.25e-3),
}


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
