"""Entry point of the PyTorch backend: registers it without importing torch until it is used."""

from __future__ import annotations

from pathlib import Path

from distill_engine.hookspecs import hookimpl
from distill_engine.losses.builtin import builtin_implementations
from distill_engine.models.bert_network import BERT_NETWORK_FAMILIES
from distill_engine.tasks.span.losses import span_implementations
from distill_engine.tasks.token.losses import token_implementations


def _create():
    from distill_engine_torch.backend import TorchBackend

    return TorchBackend()


def _read_torch_bin(path: Path) -> dict:
    from distill_engine_torch.checkpoint import read_bin

    return read_bin(path)


def _probe():
    """What `distill-engine backends` prints, without importing torch where that is exact: the
    version from the installed distribution (what `torch.__version__` says) and "cpu" alone when
    the machine has no accelerator device file torch could reach; else None (start the backend)."""
    from distill_engine.plugins import cpu_only_summary
    from distill_engine_torch import __version__

    return cpu_only_summary("torch", __version__, ("gpu",))


@hookimpl
def register_backends(register):
    register("torch", _create, description="PyTorch (cpu, gpu via CUDA)", probe=_probe)


@hookimpl
def register_weight_readers(register):
    register(".bin", _read_torch_bin, description="PyTorch state dict (torch.load weights_only)")


@hookimpl
def register_model_implementations(register):
    for family in BERT_NETWORK_FAMILIES:  # BERT's network computes each of their variants
        register(family, "torch", "distill_engine_torch.backend:bert_model")


@hookimpl
def register_loss_implementations(register):
    # the built-in kinds' PyTorch implementations, as "module:function" (torch is imported on first use)
    for kind, function in builtin_implementations("distill_engine_torch.losses").items():
        register(kind, "torch", function)
    for kind, function in token_implementations("distill_engine_torch.token_losses").items():
        register(kind, "torch", function)
    for kind, function in span_implementations("distill_engine_torch.span_losses").items():
        register(kind, "torch", function)
