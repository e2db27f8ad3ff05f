"""The original TinyBERT's optimiser for `OptimizerSpec(bias_correction=False)`: torch.optim.AdamW has no switch for it."""

from __future__ import annotations

import torch


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction and with decoupled weight decay: pytorch_pretrained_bert's
    `BertAdam` as TinyBERT uses it, its clipping and warmup left out (the trainer clips, the core's
    schedule sets each group's "lr"):

        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m / (sqrt(v) + eps) + wd p)

    written as torch.optim.AdamW's CPU path writes the same steps (decay, lerp, addcmul, addcdiv), so
    with bias correction 1 the two agree bit for bit. Each parameter's state has AdamW's keys ("step"
    a float32 tensor, "exp_avg", "exp_avg_sq"), so the trainer's neutral state, `load_state_dict`
    and GradScaler treat both optimisers alike."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue  # as AdamW: no state, no decay for a parameter the objective did not reach
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                if wd:
                    p.mul_(1 - lr * wd)
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)
        return loss
