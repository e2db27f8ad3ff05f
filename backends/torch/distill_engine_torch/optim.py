"""The optimiser update and per-parameter clipping, fused or multi-tensor: AdamW, the original TinyBERT's BertAdam.

A TinyBERT student's update is element-wise over all its parameters (14.4M for 4/312 with BERT's
vocabulary, 9.5M of them word embeddings), so it is memory-bound: torch.optim.AdamW's default CPU
path (one tensor at a time, five passes over memory) took 41 % of a cached TD1 step. The kernel
(`KERNELS`) is chosen once per trainer:

- "fused" (the default on CPU and CUDA): torch's fused AdamW kernel, one pass over each tensor.
  BertAdam (`OptimizerSpec.bias_correction` false) runs the same kernel with a step count so large
  that 1 - beta^t is exactly 1 (`NO_CORRECTION_STEP`), i.e. without bias correction. The fused
  kernel groups its float32 operations differently (lr * m / denom against m / denom * lr, an FMA in
  the lerp), so it differs from the per-tensor path by float32 rounding only (a few ulp of the
  parameters after a few steps, docs/performance.md);
- "foreach": torch._foreach_* ops, the same operations as the per-tensor path in the same order,
  bit for bit equal to it; where the device has no fused kernel, "fused" falls back to it;
- "for-loop": one tensor at a time, the engine's path before the fused one; the benchmarks'
  baseline (benchmarks/throughput.py --optimizer-baseline).

The environment variable `DISTILL_ENGINE_TORCH_OPTIMIZER` picks another kernel (a debugging and
benchmarking switch; the recipe's numbers do not depend on it beyond float32 rounding).
"""

from __future__ import annotations

import os

import torch
from torch.utils._foreach_utils import _device_has_foreach_support

from distill_engine.errors import BackendError

KERNELS = ("fused", "foreach", "for-loop")
KERNEL_ENV = "DISTILL_ENGINE_TORCH_OPTIMIZER"
# BertAdam through the fused AdamW kernel: beta^t underflows to 0 for t = 2^40 (0.999^(2^40) =
# e^-1.1e9) for any beta below 1 - 1e-9, so the kernel's bias corrections 1 - beta^t are exactly 1.
NO_CORRECTION_STEP = 2.0 ** 40
FUSED_DEVICES = ("cpu", "cuda")  # torch's fused AdamW kernel exists for these


def kernel_for(device: torch.device) -> str:
    """The optimiser kernel for parameters on `device`: `KERNEL_ENV` or "fused", "fused" falling
    back to "foreach" (and that to "for-loop") where the device lacks it."""
    chosen = os.environ.get(KERNEL_ENV, "fused")
    if chosen not in KERNELS:
        raise BackendError(f'{KERNEL_ENV}="{chosen}": unknown optimiser kernel; choose from {", ".join(KERNELS)}')
    if chosen == "fused" and device.type not in FUSED_DEVICES:
        chosen = "foreach"
    if chosen == "foreach" and not _device_has_foreach_support(device):
        chosen = "for-loop"
    return chosen


def make_optimizer(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, bias_correction: bool,
                   kernel: str) -> torch.optim.Optimizer:
    """AdamW (`bias_correction`) or BertAdam over the parameter `groups` (each with its "weight_decay"),
    updated by `kernel` (one of `KERNELS`)."""
    if bias_correction:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=kernel == "fused" or None,
                                 foreach=kernel == "foreach" if kernel != "fused" else None)
    return BertAdam(groups, lr=lr, betas=betas, eps=eps, kernel=kernel)


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction and with decoupled weight decay: pytorch_pretrained_bert's
    `BertAdam` as TinyBERT uses it, its clipping and warmup left out (the trainer clips, the core's
    schedule sets each group's "lr"):

        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m / (sqrt(v) + eps) + wd p)

    written as torch.optim.AdamW writes the same steps (decay, lerp, addcmul, addcdiv; "for-loop" and
    "foreach" as its per-tensor path, bit for bit equal to it with bias correction 1; "fused" through
    its fused kernel, module docstring). Each parameter's state has AdamW's keys ("step" a float32
    tensor, "exp_avg", "exp_avg_sq"), so the trainer's neutral state, `load_state_dict` and
    GradScaler treat both optimisers alike."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, kernel: str = "for-loop"):
        if kernel not in KERNELS:
            raise BackendError(f'BertAdam kernel "{kernel}": choose from {", ".join(KERNELS)}')
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.kernel = kernel

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, ms, vs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue  # as AdamW: no state, no decay for a parameter the objective did not reach
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if params:
                update = {"for-loop": _bert_adam_for_loop, "foreach": _bert_adam_foreach, "fused": _bert_adam_fused}
                for st in steps:
                    st += 1
                update[self.kernel](params, grads, ms, vs, group)
        return loss


def _bert_adam_for_loop(params, grads, ms, vs, group) -> None:
    (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
    for p, grad, m, v in zip(params, grads, ms, vs):
        if wd:
            p.mul_(1 - lr * wd)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)


def _bert_adam_foreach(params, grads, ms, vs, group) -> None:
    (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
    if wd:
        torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(ms, grads, 1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, ms, denom, value=-lr)


def _bert_adam_fused(params, grads, ms, vs, group) -> None:
    (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
    if any(1 - b ** NO_CORRECTION_STEP != 1.0 for b in (b1, b2)):
        _bert_adam_foreach(params, grads, ms, vs, group)  # a beta so near 1 that t = 2^40 leaves a correction
        return
    # the kernel reads the step count only (the optimiser's own counts are incremented by step())
    no_correction = [torch.tensor(NO_CORRECTION_STEP, dtype=torch.float32, device=params[0].device)] * len(params)
    torch._fused_adamw_(params, grads, ms, vs, [], no_correction, lr=float(lr), beta1=b1, beta2=b2,
                        weight_decay=float(wd), eps=eps, amsgrad=False, maximize=False)


def clip_each_(params: list[torch.Tensor], max_norm: float, kernel: str) -> None:
    """Clip each parameter's gradient norm to `max_norm` in place, exactly as
    torch.nn.utils.clip_grad_norm_ called on each parameter alone (scale min(1, max_norm / (norm +
    1e-6))); with a multi-tensor kernel, the norms and scales of all gradients at once (bit for bit
    the same numbers). Parameters without a gradient are skipped."""
    if kernel == "for-loop":
        for p in params:
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_([p], max_norm)
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads, 2.0)
    # clip_grad_norm_ takes the norm of the stacked per-tensor norms: one element each here
    totals = torch.linalg.vector_norm(torch.stack(norms).unsqueeze(1), 2.0, dim=1)
    coefs = torch.clamp(float(max_norm) / (totals + 1e-6), max=1.0)
    torch._foreach_mul_(grads, list(coefs.unbind()))
