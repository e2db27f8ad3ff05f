"""jsd_logits in MindSpore ops, traced into the compiled step (formula: distill_engine_loss_example.JSD).

In float64 on [B, C] tensors, as the engine's own logit losses: float64 exp and log are exact to
rounding, MindSpore's float32 softmax kernels are not.
"""

import mindspore as ms
from mindspore import ops


def _log_softmax(z):
    shifted = z - ops.stop_gradient(z.max(-1, keepdims=True))
    return shifted - ops.log(ops.exp(shifted).sum(-1, keepdims=True))


def jsd_logits(student, teacher, mask, labels, params):
    (temp,) = params
    log_p = _log_softmax(ops.cast(teacher[0], ms.float64) / temp)
    log_q = _log_softmax(ops.cast(student[0], ms.float64) / temp)
    p, q = ops.exp(log_p), ops.exp(log_q)
    log_m = ops.log(0.5 * (p + q))
    kl_p = (p * (log_p - log_m)).sum(-1)
    kl_q = (q * (log_q - log_m)).sum(-1)
    return ops.cast(temp * temp * ops.mean(0.5 * kl_p + 0.5 * kl_q), ms.float32)
