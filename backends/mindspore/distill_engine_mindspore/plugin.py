"""Entry point of the MindSpore backend: registers it without importing MindSpore until it is used."""

from __future__ import annotations

from pathlib import Path

from distill_engine.hookspecs import hookimpl
from distill_engine.losses.builtin import builtin_implementations
from distill_engine.models.bert_network import BERT_NETWORK_FAMILIES
from distill_engine.tasks.span.losses import span_implementations
from distill_engine.tasks.token.losses import token_implementations


def _create():
    from distill_engine_mindspore.backend import MindSporeBackend

    return MindSporeBackend()


def _read_ckpt(path: Path) -> dict:
    from distill_engine_mindspore.checkpoint import read_ckpt

    return read_ckpt(path)


def _probe():
    """What `distill-engine backends` prints, without importing mindspore where that is exact: the
    version from the installed distribution (what `mindspore.__version__` says) and "cpu" alone when
    the machine has no accelerator device file mindspore could reach; else None (start the backend)."""
    from distill_engine.plugins import cpu_only_summary
    from distill_engine_mindspore import __version__

    return cpu_only_summary("mindspore", __version__, ("gpu", "ascend"))


@hookimpl
def register_backends(register):
    register("mindspore", _create, description="MindSpore 2.x (cpu; gpu and ascend where MindSpore supports them), "
                                               "compiled graph training step", probe=_probe)


@hookimpl
def register_model_implementations(register):
    for family in BERT_NETWORK_FAMILIES:  # BERT's network computes each of their variants
        register(family, "mindspore", "distill_engine_mindspore.backend:bert_model")


@hookimpl
def register_weight_readers(register):
    register(".ckpt", _read_ckpt,
             description="MindSpore checkpoint (protobuf via mindspore.load_checkpoint, no pickle)")


@hookimpl
def load_foreign_checkpoint(path, fmt):
    """Recipes with format = "mindspore": a .ckpt (canonical or model-zoo names) plus its config."""
    if fmt != "mindspore":
        return None
    from distill_engine_mindspore.checkpoint import import_ckpt

    return import_ckpt(path)


@hookimpl
def register_loss_implementations(register):
    # the built-in kinds' MindSpore implementations, as "module:function" (MindSpore is imported on first use)
    for kind, function in builtin_implementations("distill_engine_mindspore.losses").items():
        register(kind, "mindspore", function)
    for kind, function in token_implementations("distill_engine_mindspore.token_losses").items():
        register(kind, "mindspore", function)
    for kind, function in span_implementations("distill_engine_mindspore.span_losses").items():
        register(kind, "mindspore", function)
