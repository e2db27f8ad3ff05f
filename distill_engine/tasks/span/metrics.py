"""SQuAD's exact match and F1, as the official v1.1 evaluation script defines them, per question.

An answer is normalised before comparing: lower-cased, punctuation (`string.punctuation`) removed,
the articles a, an, the removed as words, whitespace collapsed. Exact match is 1 when the normalised
prediction equals a normalised gold answer; F1 is the harmonic mean of the precision and recall of
the normalised answers' words (a bag of words: a word counts as often as both have it). Each
question scores the best over its gold answers; a metric is the mean over questions, as a fraction
(the official script prints it times 100). A v2.0 question without answer (no gold answer) scores 1
on both when the prediction has no words, 0 otherwise (v2.0's script's rule for an empty answer).

Predictions are a list of answer texts, gold a list of each question's answer texts.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from distill_engine.tasks.metrics import MetricDefinition

KIND = "answer spans"  # what these metrics score (MetricDefinition.applies_to)
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised answers' words (0 when they share none, also when neither has any: v1.1's)."""
    predicted, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(truth)).values())
    if not same:
        return 0.0
    precision, recall = same / len(predicted), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def _mean_best(scorer, predictions, gold) -> float:
    scores = [max(scorer(p, g) for g in answers) if answers else float(not normalize_answer(p))
              for p, answers in zip(predictions, gold, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0


def exact_match(predictions, gold) -> float:
    return _mean_best(lambda p, g: float(normalize_answer(p) == normalize_answer(g)), predictions, gold)


def squad_f1(predictions, gold) -> float:
    return _mean_best(answer_f1, predictions, gold)


SPAN_METRICS = (
    MetricDefinition("squad_f1", squad_f1, KIND, "SQuAD's F1 over the normalised answers' words, best over gold answers"),
    MetricDefinition("exact_match", exact_match, KIND, "SQuAD's exact match of the normalised answers, best over gold"),
)
