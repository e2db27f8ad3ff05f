"""The neutral trainer state (distill_engine.backend): names, assembly and the checks load_state relies on."""

import numpy as np
import pytest

from distill_engine.backend import (ADAM_STEP, EXP_AVG, EXP_AVG_SQ, LOSS_SCALE, SCHEDULE_STEP, parse_trainer_state,
                                    rng_key, trainer_state)
from distill_engine.errors import CheckpointError

SHAPES = {"pooler.dense.weight": (4, 4), "pooler.dense.bias": (4,)}


def _state(**kw):
    moments = {n: (np.full(s, 0.5, np.float32), np.full(s, 0.25, np.float32)) for n, s in SHAPES.items()}
    args = dict(schedule_step=3, adam_step=2, moments=moments, loss_scale=(256.0, 1, 1),
                rng={rng_key("torch", "cpu"): np.arange(5, dtype=np.uint8), rng_key("mindspore", "x"): np.zeros(2)})
    return trainer_state(**{**args, **kw})


def _parse(state, loss_scaled=True, backend="torch"):
    return parse_trainer_state(state, backend=backend, parameters=SHAPES, loss_scaled=loss_scaled)


def test_names_and_round_trip():
    state = _state()
    assert rng_key("torch", "cuda", 0) == "rng.torch.cuda.0"
    assert {SCHEDULE_STEP, ADAM_STEP, LOSS_SCALE, EXP_AVG + "pooler.dense.bias", EXP_AVG_SQ + "pooler.dense.bias"} <= set(state)
    assert all(isinstance(v, np.ndarray) for v in state.values()) and state[SCHEDULE_STEP].shape == ()
    parsed = _parse(state)
    assert (parsed.schedule_step, parsed.adam_step, parsed.loss_scale) == (3, 2, (256.0, 1, 1))
    assert set(parsed.moments) == set(SHAPES)
    assert set(parsed.rng) == {"rng.torch.cpu"}  # another backend's RNG is dropped
    assert set(_parse(state, backend="mindspore").rng) == {"rng.mindspore.x"}


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop(SCHEDULE_STEP), 'no "schedule.step"'),
    (lambda s: s.pop(EXP_AVG_SQ + "pooler.dense.bias"), 'but no "adam.exp_avg_sq.pooler.dense.bias"'),
    (lambda s: s.update({EXP_AVG + "pooler.dense.bias": np.zeros(5, np.float32)}), "shape (5,), but parameter"),
    (lambda s: s.update({EXP_AVG + "pooler.dense.bias": np.zeros(4, np.float64)}), "dtype float64, expected float32"),
    (lambda s: s.update({EXP_AVG + "classifier.bias": np.zeros(2, np.float32),
                         EXP_AVG_SQ + "classifier.bias": np.zeros(2, np.float32)}), "not a parameter this trainer updates"),
    (lambda s: s.update({"momentum.x": np.zeros(1)}), 'unknown key "momentum.x"'),
    (lambda s: s.update({ADAM_STEP: np.array(7)}), "exceeds"),
    (lambda s: s.update({ADAM_STEP: np.array(0)}), "moments but"),
    (lambda s: s.update({ADAM_STEP: np.array([2])}), "expected a scalar"),
    (lambda s: s.update({ADAM_STEP: np.array(2.0)}), "non-negative integer"),
    (lambda s: s.update({SCHEDULE_STEP: 3}), "expected a numpy array, got int"),
    (lambda s: s.update({LOSS_SCALE: np.array(0.0)}), "positive float"),
    (lambda s: s.pop(LOSS_SCALE), 'no "loss_scale.scale"'),
])
def test_a_bad_state_is_named_in_one_line(change, message):
    state = _state()
    change(state)
    with pytest.raises(CheckpointError) as caught:
        _parse(state)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_loss_scale_state_only_where_the_trainer_scales():
    with pytest.raises(CheckpointError, match="does not scale the loss"):
        _parse(_state(), loss_scaled=False)
    assert _parse(_state(loss_scale=None), loss_scaled=False).loss_scale is None


def test_no_moments_yet_is_a_valid_state():
    parsed = _parse(_state(schedule_step=0, adam_step=0, moments={}, loss_scale=None), loss_scaled=False)
    assert parsed.moments == {} and parsed.adam_step == 0
