"""jsd_logits in PyTorch (formula: distill_engine_loss_example.JSD)."""

import torch
import torch.nn.functional as F


def jsd_logits(student, teacher, mask, labels, params):
    (temp,) = params
    log_p, log_q = F.log_softmax(teacher[0] / temp, -1), F.log_softmax(student[0] / temp, -1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - torch.log(torch.tensor(2.0, dtype=log_p.dtype))
    kl_p = torch.sum(torch.exp(log_p) * (log_p - log_m), -1)
    kl_q = torch.sum(torch.exp(log_q) * (log_q - log_m), -1)
    return temp * temp * torch.mean(0.5 * kl_p + 0.5 * kl_q)
