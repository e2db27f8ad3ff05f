"""Taps: the intermediate tensors of a BERT forward that distillation compares, as plain numpy.

`hidden_states[0]` is the embedding output and `hidden_states[j]` the output of layer j;
`attention_scores[i]` is layer i's raw score QK^T/sqrt(d_head) + (1 - mask) * -10000, before
softmax, shape [B, heads, L, L]; `values[i]` layer i's self-attention value vectors
[B, heads, L, head_dim] (MiniLM's value relation; empty when a backend was not asked for them);
`logits` is the classifier output ([B, num_labels]) or None.
"""

from __future__ import annotations

import attrs
import numpy as np


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
