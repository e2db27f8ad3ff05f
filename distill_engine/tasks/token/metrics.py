"""The token task's metrics, over words (each word once, its first piece's prediction).

Entity-level precision, recall and F1 are seqeval's default mode, which counts chunks as conlleval
does (a chunk is right when its type and both its ends are; an I-X after O or after another type
opens a chunk, as conlleval reads malformed or IOB1 input): micro-averaged over all chunks, and per
entity type in the run's results (`entity_details`). `token_f1` is the MindSpore BERT zoo's
"F1" assessment (src/assessment_method.py, mode "Binary"), for comparing with the seed: every word
whose tag is not O is a positive, and a word counts as found when both its gold and its predicted
tags are positive, whatever their types (the zoo's labels 1..C-1 against label 0, O). The zoo counts
every row position, special tokens and padding included; here only words count.

Predictions and gold are lists of sentences, each a list of tag strings.
"""

from __future__ import annotations

from distill_engine.tasks.metrics import MetricDefinition
from distill_engine.tasks.token.schemes import OUTSIDE

KIND = "entity tags"  # what these metrics score (MetricDefinition.applies_to)


def _seqeval():
    # imported on first use: seqeval imports scikit-learn, a second's work a plain import should not pay
    from seqeval.metrics import sequence_labeling

    return sequence_labeling


def entity_f1(predictions, gold) -> float:
    return float(_seqeval().f1_score(gold, predictions, zero_division=0))


def entity_precision(predictions, gold) -> float:
    return float(_seqeval().precision_score(gold, predictions, zero_division=0))


def entity_recall(predictions, gold) -> float:
    return float(_seqeval().recall_score(gold, predictions, zero_division=0))


def token_f1(predictions, gold) -> float:
    tp = fp = fn = 0
    for pred, true in zip(predictions, gold):
        for p, t in zip(pred, true):
            p_pos, t_pos = p != OUTSIDE, t != OUTSIDE
            tp += p_pos and t_pos
            fp += p_pos and not t_pos
            fn += t_pos and not p_pos
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def entity_details(predictions, gold) -> dict[str, float]:
    """Per entity type (of gold or predictions): "entity_precision/<type>", "entity_recall/<type>",
    "entity_f1/<type>" and "entity_support/<type>" (the gold chunks), as seqeval's report gives them."""
    sl = _seqeval()
    out: dict[str, float] = {}
    # the types, in seqeval's own (sorted) order of its per-type arrays
    names = sorted({t for t, _, _ in sl.get_entities(gold)} | {t for t, _, _ in sl.get_entities(predictions)})
    if not names:
        return out
    p, r, f, s = sl.precision_recall_fscore_support(gold, predictions, average=None, zero_division=0)
    for i, name in enumerate(names):
        out.update({f"entity_precision/{name}": float(p[i]), f"entity_recall/{name}": float(r[i]),
                    f"entity_f1/{name}": float(f[i]), f"entity_support/{name}": float(s[i])})
    return out


ENTITY_METRICS = ("entity_f1", "entity_precision", "entity_recall")
TOKEN_METRICS = (
    MetricDefinition("entity_f1", entity_f1, KIND, "entity-level F1, micro over chunks (conlleval, seqeval)"),
    MetricDefinition("entity_precision", entity_precision, KIND, "entity-level precision (conlleval, seqeval)"),
    MetricDefinition("entity_recall", entity_recall, KIND, "entity-level recall (conlleval, seqeval)"),
    MetricDefinition("token_f1", token_f1, KIND,
                     "the MindSpore BERT zoo's F1: words tagged other than O, whatever their type"),
)
