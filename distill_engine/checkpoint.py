"""Checkpoints: the neutral format (safetensors + manifest.json), written atomically, and imports.

A neutral checkpoint is a directory:
- `model.safetensors`: every parameter under its canonical name, float32;
- `manifest.json`: format version, model config, phase, step, layer mapping, metrics;
- `vocab.txt`: the WordPiece vocabulary the model was trained with (when known).
It is written to a temporary sibling directory and renamed into place
(`io.write_directory_atomically`), so a crash never leaves a half-written checkpoint, and an
existing checkpoint is replaced only once the new one is whole.

Imports read Hugging Face BERT directories (`config.json` + `model.safetensors`, or
`pytorch_model.bin` through a plugin's reader, never unrestricted pickle) and any weight file a
plugin registers a reader for (e.g. MindSpore `.ckpt`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from distill_engine.errors import CheckpointError
from distill_engine.io import write_directory_atomically
from distill_engine.models.registry import DEFAULT_FAMILY, family_of, get_family, parameter_shapes, read_hf_config

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
# The formats a checkpoint is read in (`--format` of predict and export: the command line names
# them from here, a module cheap to import, rather than from predict or export)
CHECKPOINT_FORMATS = ("neutral", "huggingface", "mindspore")

@attrs.frozen(eq=False)
class Checkpoint:
    """A loaded model: its config, its canonical-name state, and the manifest's extra fields."""

    config: Any  # the config of its model family (distill_engine.bert.BertConfig for BERT)
    state: dict[str, np.ndarray]
    manifest: dict = attrs.field(factory=dict)
    vocab: Path | None = None


def save_checkpoint(path: Path, config: Any, state: dict[str, np.ndarray], *,
                    vocab: Path | None = None, **manifest) -> Path:
    """Write a neutral checkpoint directory atomically; extra keyword fields go into the manifest."""
    path = Path(path)

    def fill(tmp: Path) -> None:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, str(tmp / WEIGHTS))
        doc = {"format": "distill-engine", "format_version": FORMAT_VERSION, "config": config.to_dict(), **manifest}
        family = family_of(config).name
        if family != DEFAULT_FAMILY:  # (a BERT manifest stays as it always was)
            doc["family"] = family
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, default=_json_default))
        if vocab is not None and Path(vocab).is_file():
            # the family's tokenizer files under their own names: the one given, then those beside it
            # (RoBERTa's merges.txt beside its vocab.json)
            first, *others = vocab_files(config)
            shutil.copyfile(vocab, tmp / first)
            for name in others:
                if (Path(vocab).parent / name).is_file():
                    shutil.copyfile(Path(vocab).parent / name, tmp / name)

    return write_directory_atomically(path, fill)


def vocab_files(config: Any) -> tuple[str, ...]:
    """The tokenizer files of `config`'s family in a checkpoint directory, the one its tokenizer
    reads first (BERT's vocab.txt; RoBERTa's vocab.json, merges.txt; XLM-R's tokenizer.json)."""
    return getattr(family_of(config), "vocab_files", ("vocab.txt",))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if attrs.has(type(value)):
        return attrs.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None


def load_neutral(path: Path) -> Checkpoint:
    """Read a neutral checkpoint directory written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST}; is this a Hugging Face directory? "
                              'set format = "huggingface"')
    try:
        manifest = json.loads(manifest_path.read_text())
        config = get_family(manifest.get("family", DEFAULT_FAMILY)).config_from_dict(manifest["config"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{manifest_path}: malformed manifest ({exc})") from None
    state = _read_safetensors(path / WEIGHTS)
    vocab = path / vocab_files(config)[0]
    return Checkpoint(config, state, manifest, vocab if vocab.is_file() else None)


def hf_to_canonical(tensors: dict[str, np.ndarray], source: str, config: Any = None) -> dict[str, np.ndarray]:
    """Map a Hugging Face checkpoint's names onto canonical names, as `config`'s model family says
    (BERT's without a config: drop the "bert." prefix, old-style gamma/beta, buffers, pre-training heads)."""
    family = get_family(DEFAULT_FAMILY) if config is None else family_of(config)
    return family.from_hf_names(tensors, source)


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Tensors of one weight file by suffix: safetensors built in, others from plugins."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    from distill_engine.plugins import weight_readers

    readers = weight_readers()
    if path.suffix not in readers:
        known = ", ".join([".safetensors", *sorted(readers)])
        raise CheckpointError(f"{path}: no reader for {path.suffix or 'files without a suffix'} "
                              f"(readable here: {known}; install the backend that reads it)")
    try:
        return readers[path.suffix](path)
    except CheckpointError:
        raise
    except Exception as exc:  # a reader's own failure is still one line naming the file
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def load_huggingface(path: Path) -> Checkpoint:
    """Import a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin) of a
    registered model family (config.json's `model_type` picks it)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    config = read_hf_config(path / "config.json")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            tensors = read_weights(path / name)
            break
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")
    state = hf_to_canonical(tensors, str(path), config)
    if config.num_labels == 0 and "classifier.weight" in state:
        config = attrs.evolve(config, num_labels=int(state["classifier.weight"].shape[0]))
    family = family_of(config)
    if getattr(config, "head", "pooled") != "pooled" or not getattr(family, "hf_has_pooler", True):
        # BertForTokenClassification and BertForQuestionAnswering have no pooler, nor have ELECTRA's and
        # DistilBERT's base models; the engine's state keeps one for every head (bert.BertConfig.head):
        # a fresh one, which their logits do not read
        fresh = {k for k in parameter_shapes(config) if k.startswith("pooler.") and k not in state}
        state = {**state, **family.init_parameters(config, 0, only=fresh)} if fresh else state
    vocab = path / vocab_files(config)[0]
    return Checkpoint(config, state, {"imported_from": str(path)}, vocab if vocab.is_file() else None)


def load_any(path: Path, fmt: str) -> Checkpoint:
    """Load a checkpoint in `fmt`: "neutral" and "huggingface" here, any other format (e.g.
    "mindspore") through a plugin's `load_foreign_checkpoint`."""
    if fmt == "neutral":
        return load_neutral(path)
    if fmt == "huggingface":
        return load_huggingface(path)
    from distill_engine import plugins

    plugins.load_plugins()
    result = plugins.pm.hook.load_foreign_checkpoint(path=Path(path), fmt=fmt)
    if result is None:
        hint = "; install the mindspore backend (pip install -e backends/mindspore)" if fmt == "mindspore" else ""
        raise CheckpointError(f'{path}: no installed plugin reads checkpoint format "{fmt}"{hint}')
    return result


def check_tensors(config: Any, state: dict[str, np.ndarray], source: str,
                  allow_missing: tuple[str, ...] = ()) -> list[str]:
    """Check names and shapes against `config`; return the names missing but allowed to be
    (prefixes in `allow_missing`, e.g. a new classifier head), raise for anything else."""
    expected = parameter_shapes(config)
    missing = [k for k in expected if k not in state]
    fatal_missing = [k for k in missing if not k.startswith(allow_missing)]
    extra = sorted(k for k in state if k not in expected)
    bad = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
           if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if fatal_missing:
        problems.append("missing tensors: " + ", ".join(fatal_missing))
    if extra:
        problems.append("unexpected tensors: " + ", ".join(extra))
    if bad:
        problems.append("wrong shapes: " + ", ".join(bad))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    return missing
