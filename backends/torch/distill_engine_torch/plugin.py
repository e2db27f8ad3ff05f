"""Entry point of the PyTorch backend: registers it without importing torch until it is used."""

from __future__ import annotations

from pathlib import Path

from distill_engine.hookspecs import hookimpl


def _create():
    from distill_engine_torch.backend import TorchBackend

    return TorchBackend()


def _read_torch_bin(path: Path) -> dict:
    """Tensors of a PyTorch `.bin` state dict; weights_only refuses anything but tensors and plain data."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


@hookimpl
def register_backends(register):
    register("torch", _create, description="PyTorch (cpu, gpu via CUDA)")


@hookimpl
def register_weight_readers(register):
    register(".bin", _read_torch_bin, description="PyTorch state dict (torch.load weights_only)")


# The built-in loss kinds' PyTorch implementations ("module:function": torch is imported on first use).
BUILTIN_LOSSES = {
    "attention_mse": "attention_mse", "embedding_mse": "hidden_mse", "hidden_mse": "hidden_mse",
    "soft_cross_entropy": "soft_cross_entropy", "hard_cross_entropy": "hard_cross_entropy", "mse": "label_mse",
    "kl_divergence": "kl_divergence", "logit_mse": "logit_mse", "cosine_hidden": "cosine_hidden",
    "pkd_hidden": "pkd_hidden", "minilm_attention": "minilm_attention", "minilm_value_relation": "minilm_value_relation",
}


@hookimpl
def register_loss_implementations(register):
    for kind, function in BUILTIN_LOSSES.items():
        register(kind, "torch", f"distill_engine_torch.losses:{function}")
