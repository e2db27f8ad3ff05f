"""Learning-rate schedules computed by the core (every backend follows the same numbers)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from distill_engine.optim import ScheduleSpec, learning_rates


@given(total=st.integers(1, 500), warm=st.floats(0, 0.5), kind=st.sampled_from(["linear", "polynomial"]),
       power=st.floats(0.5, 3))
def test_warmup_then_decay(total, warm, kind, power):
    lrs = learning_rates(ScheduleSpec(kind, warm, power), 1e-3, total)
    assert lrs.shape == (total,) and lrs.dtype == np.float32
    assert np.all(lrs >= 0) and np.all(lrs <= 1e-3 * (1 + 1e-6))
    w = int(round(warm * total))
    assert np.all(np.diff(lrs[:w]) >= 0)  # warmup rises
    assert np.all(np.diff(lrs[w:]) <= 1e-12)  # decay falls
    if w < total:
        assert lrs[w] == np.float32(1e-3)


def test_constant_and_linear_values():
    np.testing.assert_allclose(learning_rates(ScheduleSpec("constant", 0.0), 5e-5, 4), [5e-5] * 4)
    np.testing.assert_allclose(learning_rates(ScheduleSpec("linear", 0.5), 1.0, 4), [0.5, 1.0, 1.0, 0.5])
