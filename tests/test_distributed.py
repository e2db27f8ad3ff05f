"""The neutral half of data-parallel training: shares, loss weights, the step agreement, the checks.

The launchers' runs are in tests/e2e/test_data_parallel.py; here the math they rely on: the ranks'
shares partition each global batch, and the loss weights N * rows_r / rows turn the framework's
mean of per-rank gradients into the global batch's gradient (checked on the torch backend's
gradients of every loss kind, one process, rank by rank).
"""

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.distributed import (LOSS_WEIGHT, SINGLE, StepAgreement, check_global_batches, share,
                                        shard_batch)
from distill_engine.errors import RecipeError


@given(rows=st.integers(0, 300), world=st.integers(1, 9))
def test_shares_partition_the_batch_in_order(rows, world):
    parts = [share(rows, r, world) for r in range(world)]
    assert parts[0].start == 0 and parts[-1].stop == rows
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@attrs.frozen
class FakeRank:
    """A rank of a group whose all_sum is given (the other ranks' contributions precomputed)."""

    rank: int
    world_size: int
    local_rank: int = 0
    launcher: str = "test"
    others: np.ndarray | None = None

    def all_sum(self, values):
        return np.asarray(values, np.float64) + (0 if self.others is None else self.others)


@given(rows=st.integers(1, 70), world=st.integers(2, 8))
@settings(max_examples=60)
def test_shard_weights_average_to_one_and_empty_ranks_weigh_nothing(rows, world):
    batch = {"input_ids": np.arange(rows * 3).reshape(rows, 3), "labels": np.arange(rows)}
    shards = [shard_batch(batch, np.arange(100, 100 + rows), FakeRank(r, world)) for r in range(world)]
    assert np.isclose(sum(s.weight for s in shards), world)  # mean over ranks of the weights: 1
    assert sum(s.real_rows for s in shards) == rows
    got = np.concatenate([s.batch["labels"] for s in shards if s.real_rows])
    assert np.array_equal(got, batch["labels"])  # every row once, in order
    for s in shards:
        assert float(s.batch[LOSS_WEIGHT]) == pytest.approx(s.weight)
        assert len(s.batch["input_ids"]) == max(1, s.real_rows)  # an empty share steps on one placeholder row
        if s.real_rows == 0:
            assert s.weight == 0


def test_one_process_shard_is_the_batch_itself():
    batch = {"input_ids": np.zeros((4, 2), np.int32)}
    shard = shard_batch(batch, np.arange(4), SINGLE)
    assert shard.batch is batch and shard.weight == 1.0 and LOSS_WEIGHT not in batch


def test_step_agreement_merges_flags_and_weights_losses_by_rows():
    # rank 0 of 2 with 3 of 5 rows; rank 1 (2 rows, loss 4.0) asked to stop
    other = np.array([1.0, 0.0, 4.0 * 2])
    stop, due, values = StepAgreement(FakeRank(0, 2, others=other)).agree(False, False, {"total": 1.0, "lr": 0.1}, 3, 5)
    assert stop and not due
    assert values == {"total": pytest.approx((1.0 * 3 + 4.0 * 2) / 5), "lr": 0.1}
    assert StepAgreement(SINGLE).agree(True, True, {"total": 2.0}, 5, 5) == (True, True, {"total": 2.0})


def test_a_batch_size_the_ranks_cannot_split_is_refused_naming_the_field():
    @attrs.frozen
    class Spec:
        kind: str
        batch_size: int

    @attrs.frozen
    class Phase:
        spec: Spec
        where: str

    phases = [Phase(Spec("teacher_finetune", 32), "phases[0] (teacher)"), Phase(Spec("evaluate", 5), "phases[1] (eval)"),
              Phase(Spec("task_distill_prediction", 30), "phases[2] (td2)")]
    check_global_batches(phases, 2)
    with pytest.raises(RecipeError, match=r"phases\[2\] \(td2\)\.batch_size: 30 .* multiple of 4"):
        check_global_batches(phases, 4)


# --- the weights make the mean of the ranks' gradients the global batch's ----------------------
torch = pytest.importorskip("torch")


from distill_engine.testing.strategies import batches  # noqa: E402
from distill_engine.testing.suite import distill_setups  # noqa: E402


@st.composite
def _setups(draw):
    teacher, t_state, student, s_state, graph, _ = draw(distill_setups())
    batch = draw(batches(num_labels=2, max_batch=9))
    return teacher, t_state, student, s_state, attrs.evolve(graph, mask_padding=False), batch


@given(setup=_setups(), world=st.integers(2, 4))
@settings(max_examples=15, deadline=None)
def test_weighted_rank_gradients_average_to_the_global_gradient(setup, world):
    """Every loss kind at once (the suite's setups), batches of 1-9 rows over 2-4 ranks (so some
    ranks get fewer rows, or none): sum_r w_r grad_r / N equals the whole batch's gradient."""
    from distill_engine.backend import TrainSpec
    from distill_engine.device import Device
    from distill_engine.optim import OptimizerSpec
    from distill_engine.plugins import get_backend

    teacher_cfg, t_state, student_cfg, s_state, graph, batch = setup
    backend = get_backend("torch")
    cpu = Device("cpu")
    spec = TrainSpec(graph=graph, optimizer=OptimizerSpec(lr=1e-3), learning_rates=np.full(2, 1e-3))
    trainer = backend.trainer(backend.load_model(student_cfg, s_state, cpu), backend.load_model(teacher_cfg, t_state, cpu),
                              spec)
    rows = len(batch["input_ids"])
    want = trainer.gradients(batch)
    got = {k: np.zeros(v.shape, np.float64) for k, v in want.items()}
    for r in range(world):
        shard = shard_batch(batch, np.arange(rows), FakeRank(r, world))
        for k, g in trainer.gradients(shard.batch).items():
            got[k] += shard.weight * g / world  # DDP's mean over the ranks of the weighted losses' gradients
    # float32 noise: gradients that should be ~0 (LayerNorm over 2 features) come out as a few ulps
    # of the batch's larger ones; a wrong weighting is off by a share of the gradient itself
    scale = max(float(np.max(np.abs(g))) for g in want.values())
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * scale + 1e-7, err_msg=k)
