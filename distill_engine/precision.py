"""Training precisions (`run.precision`): their names, what each computes, and which a backend serves.

- "fp32": float32 throughout (the default; every backend serves it on every device).
- "bf16": the forwards (teacher and student) in bfloat16 where a framework's autocast puts them
  (matrix products), the loss terms in float32, no loss scaling: bfloat16 has float32's exponent
  range, so gradients do not underflow.
- "fp16": the forwards' matrix products in float16 under dynamic loss scaling (float16's range
  ends at 65504 and its smallest normal is 6e-5, so small gradients underflow unless the loss is
  scaled up first), from the phase's `loss_scale` or `DEFAULT_FP16_LOSS_SCALE`.

In every precision the master weights, their gradients as the optimiser sees them, and AdamW's
moments stay float32; evaluation (`Model.predict`, `Model.forward`) always runs in float32 on
those weights, so dev accuracies of runs in different precisions are measured the same way.
A backend says what it serves on a device with the optional `Backend.precisions(device)`; one
without it serves "fp32" only. The conformance tolerances per precision live in
`distill_engine.testing.conformance` (`PRECISION_TOLERANCES`).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from distill_engine.device import DEVICE_KINDS, Device
from distill_engine.errors import RecipeError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
MEANING = {
    "fp32": "float32 throughout",
    "bf16": "bfloat16 forwards, float32 weights and optimiser",
    "fp16": "float16 forwards with dynamic loss scaling, float32 weights and optimiser",
}
# torch.amp.GradScaler's default: large enough that small gradients survive float16, and an early
# overflow only halves it (one skipped step each), so a too-large start costs a few steps.
DEFAULT_FP16_LOSS_SCALE = 2.0**16


_NAMES = {"cpu": "cpu", "gpu": "GPU", "ascend": "Ascend device"}


def served_precisions(backend: Any, device: Device) -> tuple[str, ...]:
    """What `backend` trains in on `device`: its optional `precisions(device)`, else ("fp32",)."""
    precisions = getattr(backend, "precisions", None)
    return tuple(precisions(device)) if callable(precisions) else ("fp32",)


def check_precision(backend: Any, device: Device, precision: str) -> None:
    """Raise one RecipeError line when `backend` cannot train in `precision` on `device`, saying
    on which device kinds it could and what this device serves instead."""
    served = served_precisions(backend, device)
    if precision in served:
        return
    elsewhere = [kind for kind in backend.device_kinds() if kind in DEVICE_KINDS and kind != device.kind
                 and precision in served_precisions(backend, Device(kind))]
    if elsewhere:
        need = f"needs a {' or '.join(_NAMES[k] for k in elsewhere)} with backend {backend.name}"
    else:
        need = f"is not served by backend {backend.name} on any device"
    instead = " or ".join(f'"{p}"' for p in served)
    raise RecipeError(f'run.precision: "{precision}" ({MEANING.get(precision, "unknown")}) {need}; '
                      f"on {device} use {instead}")
