"""Optimiser and learning-rate schedule specifications, and the schedule itself as numbers.

The learning rate of every step is computed here, once, as a numpy array, and handed to the
backend: both backends then follow the same schedule to the last digit, and a compiled
MindSpore step can take it as a per-step tensor.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

ClipMode = Literal["global_norm", "per_parameter", "none"]
ScheduleKind = Literal["linear", "polynomial", "constant"]


@attrs.frozen
class OptimizerSpec:
    """AdamW as TinyBERT uses it: decoupled weight decay, none on biases and LayerNorm parameters.

    `clip` is "per_parameter" (the PyTorch original clips each tensor's gradient norm to
    `max_grad_norm`), "global_norm" (MindSpore's TinyBERT: one norm over all gradients) or "none".

    `bias_correction` true is torch.optim.AdamW (m and v divided by 1 - b^t). False is the original
    TinyBERT's `BertAdam` (pytorch_pretrained_bert), which has none:

        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m / (sqrt(v) + eps) + wd p)

    Its first update is (1-b1)/sqrt(1-b2) = 3.16 times AdamW's with the default betas (eps aside,
    m / sqrt(v) is 3.16 sign(g) against AdamW's sign(g)); the ratio tends to 1 as t grows. Both decay the weights decoupled from the gradient (`weight_decay`, none on biases/LayerNorm).
    """

    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip: ClipMode = "global_norm"
    max_grad_norm: float = 1.0
    bias_correction: bool = True


@attrs.frozen
class ScheduleSpec:
    """Linear warmup over `warmup_fraction` of the steps, then decay to `end_lr_fraction * lr`:
    linearly ("linear"), as (1 - progress)^power ("polynomial"), or not at all ("constant")."""

    kind: ScheduleKind = "linear"
    warmup_fraction: float = 0.1
    power: float = 1.0
    end_lr_fraction: float = 0.0


def learning_rates(spec: ScheduleSpec, base_lr: float, total_steps: int) -> np.ndarray:
    """Learning rate of each of `total_steps` steps (float32); step s uses element s."""
    steps = np.arange(total_steps, dtype=np.float64)
    warmup = int(round(spec.warmup_fraction * total_steps))
    end = base_lr * spec.end_lr_fraction
    if spec.kind == "constant":
        decayed = np.full(total_steps, base_lr)
    else:
        span = max(total_steps - warmup, 1)
        progress = np.clip((steps - warmup) / span, 0.0, 1.0)
        power = 1.0 if spec.kind == "linear" else spec.power
        decayed = (base_lr - end) * (1.0 - progress) ** power + end
    if warmup > 0:
        # (s + 1) / warmup rather than s / warmup: no step is wasted at a learning rate of 0.
        decayed = np.where(steps < warmup, base_lr * (steps + 1) / warmup, decayed)
    return decayed.astype(np.float32)
