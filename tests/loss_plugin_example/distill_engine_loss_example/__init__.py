"""An example loss plugin, outside the engine: the Jensen-Shannon divergence between the logits.

It is what docs/writing-a-loss.md walks through: a `LossDefinition` (name, what it reads, its
parameter, its exact formula, its numpy reference) registered through `register_losses`, and one
implementation per backend registered through `register_loss_implementations` as
"module:function" strings, so neither framework is imported when the plugin loads.
"""

from __future__ import annotations

import numpy as np

from distill_engine import hookimpl
from distill_engine.losses import LossDefinition, LossParam
from distill_engine.losses.builtin import log_softmax


def jsd_logits(student, teacher, mask, labels, params) -> float:
    """numpy reference, float64."""
    (temp,) = params
    p = np.exp(log_softmax(np.asarray(teacher[0], np.float64) / temp))
    q = np.exp(log_softmax(np.asarray(student[0], np.float64) / temp))
    m = 0.5 * (p + q)
    kl = lambda a: np.sum(a * (np.log(a) - np.log(m)), axis=-1)  # noqa: E731
    return float(temp * temp * np.mean(0.5 * kl(p) + 0.5 * kl(q)))


JSD = LossDefinition(
    "jsd_logits", "logits", summary="Jensen-Shannon divergence between the logits (DistillKit's JSD)",
    formula="T^2 * mean_B [ KL(p_T || m) + KL(p_S || m) ] / 2, p = softmax(z / T), m = (p_T + p_S) / 2: "
            "symmetric and bounded by T^2 log 2, unlike KL.",
    reference=jsd_logits,
    params=(LossParam("temperature", 1.0, "the softmax temperature T of both sides", 1e-3, 1e3),))


@hookimpl
def register_losses(register):
    register(JSD)


@hookimpl
def register_loss_implementations(register):
    register("jsd_logits", "torch", "distill_engine_loss_example.torch_impl:jsd_logits")
    register("jsd_logits", "mindspore", "distill_engine_loss_example.mindspore_impl:jsd_logits")
