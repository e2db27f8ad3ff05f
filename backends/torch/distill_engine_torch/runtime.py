"""How this backend runs torch code: which devices it serves and where, in which precision.

The engine's devices map to torch's ("cpu"; "gpu:N" is CUDA device N), and `TrainSpec.precision`
to an autocast dtype (`AUTOCAST_DTYPES`). Unlike MindSpore (`distill_engine_mindspore.runtime`:
graph compilation, one device per process), torch runs eagerly and needs no process-wide setup.
"""

from __future__ import annotations

import torch

from distill_engine.device import Device


def torch_device(device: Device) -> torch.device:
    """The torch device of an engine device ("cpu", "gpu:N" -> cuda:N)."""
    return torch.device("cpu") if device.kind == "cpu" else torch.device("cuda", device.index)


# The autocast dtype of each precision (None: plain float32).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# The first CUDA capability with bfloat16 in its tensor cores (Ampere). torch.cuda.is_bf16_supported()
# also counts emulation (a V100 or T4 "supports" bfloat16 at a fraction of float16's speed) and asks
# about the current device rather than the one a recipe names.
BF16_CAPABILITY = (8, 0)


def native_bf16(device: Device) -> bool:
    """Whether GPU `device` multiplies bfloat16 natively (compute capability 8.0 or later)."""
    if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
        return False
    return tuple(torch.cuda.get_device_capability(device.index)) >= BF16_CAPABILITY


def available_devices() -> list[Device]:
    """The CPU, then each CUDA GPU torch sees."""
    gpus = [Device("gpu", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [Device("cpu"), *gpus]
