"""PyTorch weight files: Hugging Face `pytorch_model.bin` state dicts, read without running code.

`torch.load(weights_only=True)` refuses anything but tensors and plain data (no unrestricted
pickle). The engine writes no torch-native checkpoint (its own format is safetensors, `export
--to huggingface` writes safetensors too), so unlike `distill_engine_mindspore.checkpoint` there
is nothing to write here.
"""

from __future__ import annotations

from pathlib import Path

import torch


def read_bin(path: Path) -> dict:
    """Tensors of a PyTorch `.bin` state dict; weights_only refuses anything but tensors and plain data."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
