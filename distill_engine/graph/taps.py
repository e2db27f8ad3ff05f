"""Taps: the intermediate tensors of a BERT forward that distillation compares, as plain numpy.

The taps' vocabulary, defined here once (`TAP_KINDS`, `TAP_SHAPES`, `HEADS`, `HEAD_LOGITS`): the
backends, the teacher-output cache and the losses read it from here. For a batch of B rows of
length L (H the width, h heads of width d, C = `num_labels`):

`hidden_states[0]` is the embedding output and `hidden_states[j]` the output of layer j, [B, L, H];
`attention_scores[i]` is layer i's raw score QK^T/sqrt(d_head) + (1 - mask) * -10000, before
softmax, shape [B, heads, L, L]; `values[i]` layer i's self-attention value vectors
[B, heads, L, head_dim] (MiniLM's value relation; empty when a backend was not asked for them);
`pooled` the pooler's tanh(dense(h[:, 0])), [B, H]; `logits` the output of the model's head
(`BertConfig.head`, shapes in `HEAD_LOGITS`) or None for a model without one.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

# The tap kinds a forward offers, as `Taps.named()` names them ("hidden.<j>", "attention.<i>",
# "value.<i>" carry an index), and the shape of each.
TAP_KINDS: tuple[str, ...] = ("embeddings", "hidden", "attention", "value", "pooled", "logits")
TAP_SHAPES: dict[str, str] = {
    "embeddings": "[B, L, H]",
    "hidden": "[B, L, H]",
    "attention": "[B, h, L, L]",
    "value": "[B, h, L, d]",
    "pooled": "[B, H]",
    "logits": "per head: HEAD_LOGITS",
}

# The heads a model may have (`BertConfig.head`) and the shape of their logits:
# - "pooled": classifier(act(pooled)), BertForSequenceClassification's (act: `classifier_activation`);
# - "token": classifier(hidden[-1]) at every position, BertForTokenClassification's (NER: a tag per
#   word piece);
# - "span": qa_outputs(hidden[-1]) at every position, BertForQuestionAnswering's: [..., 0] are the
#   start logits, [..., 1] the end logits (C = 2).
Head = Literal["pooled", "token", "span"]
HEADS: tuple[str, ...] = Head.__args__  # type: ignore[attr-defined]
HEAD_LOGITS: dict[str, str] = {"pooled": "[B, C]", "token": "[B, L, C]", "span": "[B, L, 2]"}


def per_position_logits(head: str) -> bool:
    """Whether a head's logits have a row per token position ([B, L, C]) rather than per sequence ([B, C])."""
    return head != "pooled"


@attrs.frozen
class Taps:
    hidden_states: tuple[np.ndarray, ...]
    attention_scores: tuple[np.ndarray, ...]
    pooled: np.ndarray
    logits: np.ndarray | None = None
    values: tuple[np.ndarray, ...] = ()

    def named(self) -> dict[str, np.ndarray]:
        """Flat {tap name: array}: "embeddings", "hidden.j", "attention.i", "value.i", "pooled", "logits"."""
        out = {"embeddings": self.hidden_states[0]}
        out.update({f"hidden.{j}": h for j, h in enumerate(self.hidden_states) if j})
        out.update({f"attention.{i}": a for i, a in enumerate(self.attention_scores)})
        out.update({f"value.{i}": v for i, v in enumerate(self.values)})
        out["pooled"] = self.pooled
        if self.logits is not None:
            out["logits"] = self.logits
        return out


# A batch carries precomputed teacher outputs under TEACHER_PREFIX + a `Taps.named()` name.
TEACHER_PREFIX = "teacher."


def supplied_teacher_taps(batch, names) -> dict | None:
    """{name: array} of the teacher outputs `names` (DistillGraph.teacher_taps) when `batch` carries
    every one of them (the teacher-output cache); None when it carries none. Some but not all is a
    mistake of the caller, and an error."""
    present = [n for n in names if TEACHER_PREFIX + n in batch]
    if not present:
        return None
    if len(present) != len(names):
        missing = sorted(set(names) - set(present))
        raise KeyError(f"the batch carries teacher outputs {present} but not {missing}")
    return {n: batch[TEACHER_PREFIX + n] for n in names}



def split_teacher_taps(supplied: dict) -> tuple[dict, dict, object, dict]:
    """`supplied_teacher_taps`' result indexed as a model's outputs are: (hidden states {entry t:
    array}, attention scores {layer t: array}, logits or None, value vectors {layer t: array});
    "embeddings" is hidden-state entry 0."""
    hidden, scores, logits, values = {}, {}, None, {}
    for name, value in supplied.items():
        if name == "embeddings":
            hidden[0] = value
        elif name == "logits":
            logits = value
        else:
            kind, index = name.split(".")
            {"hidden": hidden, "attention": scores, "value": values}[kind][int(index)] = value
    return hidden, scores, logits, values
