"""Length-aware ("bucketed") batching: the batch order's properties, padding, and evaluation in length order.

The order itself is pure numpy (distill_engine.data.encoded.batch_order), so these run without a
framework; the evaluation checks run on the numpy reference backend and, when it is installed,
on torch. Whole runs with data.batching = "bucketed" are in tests/e2e (test_pipelines, test_resume).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import backend_installed
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.data import (BUCKET_WINDOW, EncodedDataset, batch_order, iterate_batches, num_batches,
                                 padded_length, trim_padding)
from distill_engine.errors import DataError, RecipeError

L = 64


def _dataset(lengths) -> EncodedDataset:
    """Row i holds id i + 1 in each of its `lengths[i]` real positions (labels: the row index)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int32)
    ids = mask * (np.arange(len(lengths))[:, None] + 1)
    return EncodedDataset(ids, np.zeros_like(ids), mask, np.arange(len(lengths)))


def _sst2_like_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Word-piece lengths shaped like SST-2 train with [CLS]/[SEP] (mean ~13, long right tail, max 64)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(10.0), 0.7, n)) + 2, 3, L).astype(np.int64)


lengths_st = st.lists(st.integers(1, L), min_size=0, max_size=400)
order_args = dict(batch_size=st.integers(1, 17), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 5),
                  drop_last=st.booleans(), window=st.integers(1, 8))


def _rows(batches) -> np.ndarray:
    return np.concatenate(batches) if batches else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- the order


@settings(max_examples=80, deadline=None)
@given(lengths=lengths_st, **order_args)
def test_bucketed_covers_each_row_once_and_honours_drop_last(lengths, batch_size, seed, epoch, drop_last, window):
    data = _dataset(lengths)
    n = len(data)
    batches = batch_order(data, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last,
                          batching="bucketed", window=window)
    assert len(batches) == num_batches(n, batch_size, drop_last)
    rows = _rows(batches)
    assert len(set(rows.tolist())) == len(rows)
    sizes = [len(b) for b in batches]
    if drop_last:
        assert all(s == batch_size for s in sizes) and len(rows) == n - n % batch_size
        # the rows dropped are those "fixed" batching drops: the tail of the epoch's permutation
        fixed = _rows(batch_order(data, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=True))
        assert set(rows.tolist()) == set(fixed.tolist())
    else:
        assert sorted(rows.tolist()) == list(range(n))
        assert sum(s != batch_size for s in sizes) <= 1  # at most one partial batch


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, **order_args)
def test_bucketed_batches_come_sorted_from_one_window(lengths, batch_size, seed, epoch, drop_last, window):
    data = _dataset(lengths)
    perm = np.random.default_rng([seed, epoch]).permutation(len(data))
    window_of = np.empty(len(data), np.int64)
    window_of[perm] = np.arange(len(data)) // (window * batch_size)
    for rows in batch_order(data, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last,
                            batching="bucketed", window=window):
        assert len(set(window_of[rows].tolist())) == 1
        assert np.all(np.diff(data.lengths[rows]) >= 0)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, start=st.integers(0, 60), **order_args)
def test_bucketed_is_deterministic_and_start_gives_the_tail(lengths, start, batch_size, seed, epoch, drop_last,
                                                            window):
    data = _dataset(lengths)
    kw = dict(shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last, batching="bucketed", window=window)
    whole = list(iterate_batches(data, batch_size, **kw))
    again = list(iterate_batches(data, batch_size, **kw))
    tail = list(iterate_batches(data, batch_size, start=start, **kw))
    assert len(whole) == num_batches(len(data), batch_size, drop_last)
    assert len(tail) == max(0, len(whole) - start)
    for a, b in zip(whole, again):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for a, b in zip(whole[start:], tail):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bucketed_depends_on_seed_and_epoch_only():
    data = _dataset(_sst2_like_lengths(2000))

    def order(seed, epoch):
        return _rows(batch_order(data, 32, shuffle=True, seed=seed, epoch=epoch, batching="bucketed"))

    np.testing.assert_array_equal(order(3, 1), order(3, 1))
    assert not np.array_equal(order(3, 0), order(3, 1))
    assert not np.array_equal(order(3, 0), order(4, 0))
    assert not np.array_equal(order(3, 0),
                              _rows(batch_order(data, 32, shuffle=True, seed=3, epoch=0)))  # not the fixed order


def test_fixed_is_the_permutation_cut_into_batches():
    """"fixed" must stay exactly what it was: the measured reduced run and the agreement test use it."""
    data = _dataset(_sst2_like_lengths(103))
    for drop_last in (False, True):
        batches = batch_order(data, 10, shuffle=True, seed=7, epoch=2, drop_last=drop_last)
        perm = np.random.default_rng([7, 2]).permutation(103)
        want = [perm[i : i + 10] for i in range(0, 100 if drop_last else 103, 10)]
        assert len(batches) == len(want) and all(np.array_equal(a, b) for a, b in zip(batches, want))
    assert all(np.array_equal(a, b) for a, b in zip(batch_order(data, 10, shuffle=False, seed=0),
                                                    [np.arange(i, min(i + 10, 103)) for i in range(0, 103, 10)]))


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, batch_size=st.integers(1, 17), drop_last=st.booleans())
def test_unshuffled_bucketed_is_the_stable_length_order(lengths, batch_size, drop_last):
    data = _dataset(lengths)
    batches = batch_order(data, batch_size, shuffle=False, seed=0, drop_last=drop_last, batching="bucketed")
    assert len(batches) == num_batches(len(data), batch_size, drop_last)
    kept = len(data) - len(data) % batch_size if drop_last else len(data)  # file order's tail dropped
    np.testing.assert_array_equal(_rows(batches), np.argsort(data.lengths[:kept], kind="stable"))


def test_bad_batching_and_window():
    data = _dataset([3, 4])
    with pytest.raises(DataError, match="unknown batching 'sorted'; allowed: fixed, bucketed"):
        batch_order(data, 2, shuffle=True, seed=0, batching="sorted")
    with pytest.raises(DataError, match="window"):
        batch_order(data, 2, shuffle=True, seed=0, batching="bucketed", window=0)
    with pytest.raises(DataError, match="pad_to_multiple_of"):
        padded_length(5, 0, 64)


# --------------------------------------------------------------------------- padding


def _spread_and_width(batches, data, multiple):
    lengths = data.lengths
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    width = np.mean([trim_padding(data.batch(b), multiple)["input_ids"].shape[1] for b in batches])
    return spread, width


@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_bucketed_batches_are_length_homogeneous(multiple):
    """On an SST-2-like length distribution bucketed batches hold sentences of nearly one length:
    their spread is a small fraction of random batches', and so is their padding."""
    data = _dataset(_sst2_like_lengths(6400))
    kw = dict(shuffle=True, seed=11, epoch=0)
    fixed = batch_order(data, 32, **kw)
    bucketed = batch_order(data, 32, batching="bucketed", **kw)
    fixed_spread, fixed_width = _spread_and_width(fixed, data, multiple)
    spread, width = _spread_and_width(bucketed, data, multiple)
    assert fixed_spread > 20 and spread < 0.1 * fixed_spread, (spread, fixed_spread)
    mean_length = data.lengths.mean()
    assert width - mean_length < 0.25 * (fixed_width - mean_length) + multiple, (width, fixed_width)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, L), min_size=1, max_size=200), multiple=st.sampled_from([1, 4, 8, 16, 64]),
       batch_size=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_bucketed_padding_is_a_multiple_covering_every_row(lengths, multiple, batch_size, seed):
    data = _dataset(lengths)
    for rows in batch_order(data, batch_size, shuffle=True, seed=seed, batching="bucketed"):
        batch = trim_padding(data.batch(rows), multiple)
        width = batch["input_ids"].shape[1]
        longest = int(data.lengths[rows].max())
        assert width == L or width % multiple == 0
        assert longest <= width < longest + multiple
        assert batch["attention_mask"].sum() == data.lengths[rows].sum()  # no real token lost
        np.testing.assert_array_equal(batch["labels"], rows)


def test_the_window_is_the_usual_mega_batch():
    assert BUCKET_WINDOW == 50


# --------------------------------------------------------------------------- evaluation in length order


def _evaluate(tmp_path, backend: str, batching: str, monkeypatch) -> tuple[dict, np.ndarray, set]:
    """The dev metrics and logits Runner.evaluate computes for a saved tiny student, and the shapes it fed."""
    from distill_engine import runner as runner_module
    from distill_engine.bert import init_parameters
    from distill_engine.checkpoint import save_checkpoint
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe
    from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe

    root = tmp_path / batching
    recipe = write_tiny_recipe(root, words=(1, 10))
    config = tiny_config(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_labels=2)
    save_checkpoint(root / "student", config, init_parameters(config, 3))
    text = recipe.read_text()
    (root / "eval.toml").write_text(text[: text.index("[[phases]]")] +
                                    '[[phases]]\nname = "eval"\nkind = "evaluate"\ndata = "dev"\n')
    p = plan(load_recipe(root / "eval.toml", [f"student.init={root / 'student'}", 'student.projection="none"',
                                              f'data.batching="{batching}"', "data.pad_to_multiple_of=4",
                                              "run.eval_batch_size=8"]), backend)
    model = Recording(p.backend.load_model(p.student_config, p.student_init.state, p.device))
    captured = {}

    runner = runner_module.Runner(p)
    real_predict = runner.predict_split

    def predict_split(*args, **kwargs):  # the outputs the task type evaluates
        captured["logits"] = real_predict(*args, **kwargs)
        return captured["logits"]

    monkeypatch.setattr(runner, "predict_split", predict_split)
    metrics = runner.evaluate(model)
    return metrics, captured["logits"], model.shapes


class Recording:
    """A model that notes the shape of every batch it predicts."""

    def __init__(self, model):
        self.model, self.shapes = model, set()

    def predict(self, batch):
        self.shapes.add(batch["input_ids"].shape)
        return self.model.predict(batch)


BACKENDS = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(not backend_installed("torch"),
                                                                    reason="backend torch not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_ordered_evaluation_gives_the_fixed_metrics(backend, tmp_path, monkeypatch):
    fixed, fixed_logits, fixed_shapes = _evaluate(tmp_path, backend, "fixed", monkeypatch)
    bucketed, logits, shapes = _evaluate(tmp_path, backend, "bucketed", monkeypatch)
    assert fixed_shapes == {(8, 12)}  # every batch eval_batch_size rows, max_seq_length long
    assert len(shapes) > 1 and all(rows == 8 and length % 4 == 0 for rows, length in shapes)
    np.testing.assert_allclose(logits, fixed_logits, rtol=1e-5, atol=1e-6)  # back in the dev file's order
    assert bucketed == pytest.approx(fixed)


def test_a_multiple_above_max_seq_length_cuts_nothing_beyond_it(tmp_path, planonly):
    """Bucketed batching is the default, so a short-sequence recipe (max_seq_length 12) with the
    default multiple 16 must plan; its batches are then max_seq_length long at most."""
    from distill_engine.data.encoded import padded_length
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe
    from distill_engine.testing.fixtures import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path)  # max_seq_length 12, pad_to_multiple_of 16 (the default)
    for change in ('data.batching="bucketed"', 'data.padding="longest"'):
        plan(load_recipe(recipe, [change]), planonly)
    assert padded_length(5, 16, 12) == 12 and padded_length(5, 4, 12) == 8


def test_a_run_from_before_the_batching_fields_resumes(tmp_path):
    """recipe.json of a run started before data.batching existed has neither field: that is "fixed"/16."""
    from distill_engine.fingerprint import differences

    old = {"data": {"task": "sst2", "padding": "max_length"}, "phases": [{"name": "a", "lr": 1.0}]}
    new = {"data": {"task": "sst2", "padding": "max_length", "batching": "fixed", "pad_to_multiple_of": 16},
           "phases": [{"name": "a", "lr": 1.0}]}
    assert differences(old, {}, new, {}) == []
    bucketed = {**new, "data": {**new["data"], "batching": "bucketed"}}
    assert differences(old, {}, bucketed, {}) == ['data.batching ("fixed" -> "bucketed")']


def test_padding_stats_prints_the_table(tmp_path, capsys):
    """benchmarks/padding_stats.py (the README's figures) on a tiny file: bucketed pads least."""
    import importlib.util
    from pathlib import Path

    from distill_engine.testing.fixtures import write_sst2_like, write_vocab

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "padding_stats.py"
    spec = importlib.util.spec_from_file_location("padding_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, _ = write_sst2_like(tmp_path / "glue", n_train=400, words=(1, 10))
    vocab = write_vocab(tmp_path / "vocab.txt")
    assert module.main(["--train", str(train), "--vocab", str(vocab), "--max-seq-length", "12",
                        "--batch-size", "8"]) == 0
    rows = {cells[0]: [float(c.rstrip("%")) for c in cells[1:]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| batches")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    assert rows["fixed, max_length"][:2] == [12.0, 96.0] and rows["fixed, max_length"][-1] == 1  # 50 full batches
    widths = [rows[k][0] for k in ("bucketed / 1", "bucketed / 8", "fixed, longest / 8", "fixed, max_length")]
    assert widths == sorted(widths) and widths[0] < 9 < widths[2], rows  # 3-12 tokens a sentence
