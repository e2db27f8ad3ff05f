"""The fused CPU kernels (distill_engine_mindspore.fused) against numpy float64 formulas.

Forward values and gradients, over shapes drawn by hypothesis (rows of one element, widths that are
not multiples of a vector register, enough rows to split over threads). The gradients are taken the
way the training step takes them: `mindspore.value_and_grad` of a compiled Cell, so the kernels'
`bprop` wiring is what is tested. The whole-model path is covered by the conformance suite, which
runs for the MindSpore backend with the kernels on (the default on CPU) and off.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import erf

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, ParameterTuple, Tensor, nn  # noqa: E402

from distill_engine.reference import ATTENTION_ZERO_BELOW, MASK_VALUE  # noqa: E402
from distill_engine_mindspore import fused  # noqa: E402

KERNELS = fused.kernels()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="the fused kernels could not be built (no C++ compiler)")
CASES = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
RTOL, ATOL = 1e-5, 1e-5


class _Grad(nn.Cell):
    """value and gradient of sum(f(*params) * weights) w.r.t. the params, compiled."""

    def __init__(self, fn, arrays, weights):
        super().__init__()
        self.fn = fn
        self.params = ParameterTuple([Parameter(Tensor(a), name=f"p{i}") for i, a in enumerate(arrays)])
        self.weights = Tensor(weights)
        self.grad = ms.value_and_grad(self._objective, None, self.params)

    def _objective(self):
        return (self.fn(*self.params) * self.weights).sum()

    def construct(self):
        return self.grad()


def value_and_grads(fn, arrays, weights):
    value, grads = ms.jit(_Grad(fn, arrays, weights))()
    return float(value.asnumpy()), [g.asnumpy().astype(np.float64) for g in grads]


def shapes(max_rows=300, max_cols=200):
    return st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@CASES
@given(shape=shapes(), seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 3.0, 8.0]))
def test_bias_gelu_and_its_gradient(shape, seed, scale):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * scale).astype(np.float32)
    b = rng.normal(size=shape[1]).astype(np.float32)
    w = rng.normal(size=shape).astype(np.float32)
    v = x.astype(np.float64) + b
    y = 0.5 * v * (1.0 + erf(v / np.sqrt(2.0)))
    close(KERNELS.bias_gelu(Tensor(x), Tensor(b)).asnumpy(), y, "gelu(x + b)")
    dgelu = 0.5 * (1.0 + erf(v / np.sqrt(2.0))) + v * np.exp(-0.5 * v * v) / np.sqrt(2.0 * np.pi)
    _, (dx, db) = value_and_grads(KERNELS.bias_gelu, [x, b], w)
    close(dx, w * dgelu, "d/dx")
    close(db, (w * dgelu).sum(0), "d/db", rtol=1e-4)


@CASES
@given(shape=shapes(max_cols=160), seed=st.integers(0, 2**16), masked=st.integers(0, 5))
def test_softmax_and_its_gradient(shape, seed, masked):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 4).astype(np.float32)
    x[:, : min(masked, shape[1] - 1)] += MASK_VALUE  # BERT's masked keys, never a whole row
    w = rng.normal(size=shape).astype(np.float32)
    z = x.astype(np.float64)
    y = np.exp(z - z.max(-1, keepdims=True))
    y /= y.sum(-1, keepdims=True)
    close(KERNELS.softmax(Tensor(x)).asnumpy(), y, "softmax")
    _, (dx,) = value_and_grads(KERNELS.softmax, [x], w)
    close(dx, y * (w - (w * y).sum(-1, keepdims=True)), "d/dx")


@CASES
@given(shape=shapes(max_cols=400), seed=st.integers(0, 2**16), eps=st.sampled_from([1e-12, 1e-5]))
def test_add_layer_norm_and_its_gradient(shape, seed, eps):
    rng = np.random.default_rng(seed)
    a, r, w = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    a += 3.0  # a mean far from zero
    g, b = rng.normal(size=shape[1]).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32)
    s = a.astype(np.float64) + r
    mu, var = s.mean(-1, keepdims=True), s.var(-1, keepdims=True)
    xhat = (s - mu) / np.sqrt(var + eps)
    eps_t = fused.scalar(eps)
    close(KERNELS.add_layer_norm(Tensor(a), Tensor(r), Tensor(g), Tensor(b), eps_t).asnumpy(), xhat * g + b,
          "LayerNorm(a + r)")

    def norm(a, r, g, b):  # a def, not a lambda: MindSpore parses a lambda only on a line of its own
        return KERNELS.add_layer_norm(a, r, g, b, eps_t)

    _, (da, dr, dg, db) = value_and_grads(norm, [a, r, g, b], w)
    n = shape[1]
    gx = w * g
    expected = (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True)) / np.sqrt(var + eps)
    # narrow rows (1-2 features) can have a tiny sigma: the exact gradient is ~0 there and float32's
    # rounding of a + r (|a| ~ 3) divided by sigma is what remains; 4/sigma covers it (a case of
    # 2 features measured 4.8e-4 against a former bound of 4.6e-4)
    atol = 1e-5 * max(1.0, 4.0 / np.sqrt(float(var.min()) + eps) / n)
    close(da, expected, "d/da", atol=atol)
    close(dr, expected, "d/dr", atol=atol)
    close(dg, (w * xhat).sum(0), "d/dgamma", rtol=1e-4, atol=1e-4)
    close(db, w.sum(0), "d/dbeta", rtol=1e-4, atol=1e-4)


@CASES
@given(size=st.integers(1, 70_000), seed=st.integers(0, 2**16), zero_below=st.booleans())
def test_mse_with_and_without_zeroing_and_its_gradient(size, seed, zero_below):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, size)).astype(np.float32) * 3
    if zero_below:  # masked attention scores in both maps, some only in one
        a[rng.random(size) < 0.2] = MASK_VALUE
        b[rng.random(size) < 0.2] = MASK_VALUE
    threshold = ATTENTION_ZERO_BELOW if zero_below else fused.NO_THRESHOLD
    za = np.where(a <= threshold, 0.0, a.astype(np.float64))
    zb = np.where(b <= threshold, 0.0, b.astype(np.float64))
    t = fused.scalar(threshold)
    close(float(KERNELS.mse(Tensor(a), Tensor(b), t).asnumpy()[0]), ((za - zb) ** 2).mean(), "mse")
    weight = np.array([1.7], np.float32)

    def mse(a, b):
        return KERNELS.mse(a, b, t)

    _, (da, db) = value_and_grads(mse, [a, b], weight)
    close(da, np.where(a <= threshold, 0.0, 1.7 * 2.0 * (za - zb) / size), "d/da")
    assert not db.any(), "the teacher's side gets no gradient"


def test_loading_the_kernels_leaves_the_process_floating_point_state_alone():
    """A library linked with -ffast-math turns on flush-to-zero for every thread of the process
    (crtfastmath.o), silently changing numpy's and torch's results; this one must not."""
    KERNELS.softmax(Tensor(np.zeros((2, 3), np.float32))).asnumpy()
    tiny = np.array([1e-40], np.float32)  # a float32 subnormal
    assert tiny[0] != 0 and (tiny * np.float32(1.5))[0] != 0, "subnormals are flushed to zero"


def test_the_kernels_are_off_when_asked_and_on_another_device(monkeypatch):
    assert fused.for_device("cpu") is KERNELS
    assert fused.for_device("gpu") is None and fused.for_device("ascend") is None
    monkeypatch.setenv(fused.FUSED_ENV, "0")
    assert fused.for_device("cpu") is None


def test_a_missing_compiler_falls_back_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv(fused.CACHE_ENV, str(tmp_path))
    fused.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C.. compiler"):
            assert fused.library() is None
    finally:
        fused.library.cache_clear()
    assert not any(tmp_path.iterdir()), "nothing half-built is left in the cache"


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(fused.CACHE_ENV, str(tmp_path))
    fused.library.cache_clear()
    try:
        built = fused.library()
        assert built is not None and built.parent == tmp_path and built.suffix == ".so"
        stamp = os.stat(built).st_mtime_ns
        fused.library.cache_clear()
        assert fused.library() == built and os.stat(built).st_mtime_ns == stamp, "a cached build is reused"
        assert [p.name for p in tmp_path.iterdir()] == [built.name], "no temporary files are left"
    finally:
        fused.library.cache_clear()
