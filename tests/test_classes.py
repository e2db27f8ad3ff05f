"""Per-class figures, the majority-class baseline and the degenerate-model check
(distill_engine.tasks.classes), from confusion matrices alone."""

from __future__ import annotations

import numpy as np
import pytest

from distill_engine.tasks.classes import ClassCounts, DevMetrics, classes_of, warnings


def _counts(matrix, labels=("not_equivalent", "equivalent")) -> ClassCounts:
    return ClassCounts(tuple(labels), tuple(tuple(row) for row in matrix))


def test_from_predictions_counts_gold_rows_and_predicted_columns():
    counts = ClassCounts.from_predictions(["a", "b", "c"], np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1]))
    assert counts.matrix == ((1, 0, 0), (1, 1, 0), (0, 1, 1))
    assert counts.gold_counts.tolist() == [1, 2, 2] and counts.predicted_counts.tolist() == [2, 2, 1]
    assert ClassCounts.from_record(counts.to_record()) == counts


@pytest.mark.parametrize("record", [None, {}, {"labels": ["a"], "matrix": [[1, 2]]}, {"labels": [], "matrix": []},
                                    {"labels": ["a", "b"], "matrix": [[1, "x"], [0, 1]]}, [1, 2]])
def test_a_malformed_record_is_no_matrix(record):
    assert ClassCounts.from_record(record) is None


def test_per_class_precision_recall_f1_and_zero_where_undefined():
    counts = _counts([[0, 129], [0, 279]])  # MRPC's dev set, all answered "equivalent"
    neg, pos = counts.per_class()
    assert neg == {"label": "not_equivalent", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 129,
                   "predicted": 0}
    assert pos["precision"] == pytest.approx(279 / 408) and pos["recall"] == 1.0 and pos["predicted"] == 408
    assert pos["f1"] == pytest.approx(2 * (279 / 408) / (279 / 408 + 1))


def test_the_majority_baseline_scores_each_metric_for_always_the_most_frequent_gold_class():
    counts = _counts([[100, 29], [50, 229]])
    base = counts.baseline(["accuracy", "f1", "mcc"])
    assert base["accuracy"] == pytest.approx(279 / 408)  # always "equivalent"
    assert base["f1"] == pytest.approx(2 * 279 / (2 * 279 + 129))
    assert base["mcc"] == 0.0


def test_the_issues_mrpc_student_is_degenerate_twice_over():
    counts = _counts([[0, 129], [0, 279]])
    why = warnings(counts, {"accuracy": 279 / 408, "f1": 0.8122}, ["accuracy", "f1"])
    assert why == ['it predicts "equivalent" for all 408 dev examples',
                   'its accuracy 0.6838 is at or below the majority-class baseline\'s 0.6838 (always "equivalent")']


def test_a_real_model_and_an_almost_one_class_one():
    assert warnings(_counts([[100, 29], [50, 229]]), {"accuracy": 329 / 408}, ["accuracy"]) == []
    almost = _counts([[5, 124], [1, 278]])  # 402 of 408 (98.5 %) "equivalent", a bit above the baseline
    assert warnings(almost, {"accuracy": 283 / 408}, ["accuracy"]) == [
        'it predicts "equivalent" for 98.5 % of the 408 dev examples']


def test_a_lopsided_dev_set_makes_one_class_answers_no_warning_by_themselves():
    counts = _counts([[0, 2], [0, 98]])  # 98 % of the gold labels are "equivalent"
    assert warnings(counts, {"accuracy": 0.99}, ["accuracy"]) == []  # above the baseline 0.98
    assert warnings(counts, {"accuracy": 0.98}, ["accuracy"]) == [
        'its accuracy 0.9800 is at or below the majority-class baseline\'s 0.9800 (always "equivalent")']


def test_a_metric_that_cannot_score_class_ids_skips_the_baseline_check():
    assert warnings(_counts([[3, 1], [1, 3]]), {"entity_f1": 0.1}, ["entity_f1"]) == []


def test_dev_metrics_stay_a_plain_dict_to_their_readers():
    import json

    counts = _counts([[1, 0], [0, 1]])
    metrics = DevMetrics({"accuracy": 1.0}, counts)
    assert metrics == {"accuracy": 1.0} and json.loads(json.dumps(metrics)) == {"accuracy": 1.0}
    assert classes_of(metrics) is counts and classes_of({"accuracy": 1.0}) is None
