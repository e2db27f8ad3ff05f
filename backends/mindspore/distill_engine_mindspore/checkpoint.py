"""MindSpore `.ckpt` files: read (protobuf, no pickle), write atomically, and import as a model.

`write_ckpt` stores canonical names, so an exported student reads back bit for bit with `read_ckpt`
and loads into MindSpore code that uses canonical names; `import_ckpt` also accepts the model
zoo's BERT/TinyBERT naming (see `zoo_names`). A `.ckpt` carries no model config: `write_ckpt`
embeds one (as a string entry) when given, and `import_ckpt` otherwise reads a Hugging Face style
`config.json` beside the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.errors import CheckpointError
from distill_engine.io import write_atomically
from distill_engine.models.registry import read_hf_config
from distill_engine_mindspore.zoo_names import model_prefixes, zoo_to_canonical

CONFIG_KEY = "distill_engine.config"  # string entry holding the BertConfig as JSON


def _load(path: Path) -> dict:
    import mindspore as ms

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: MindSpore checkpoint file not found")
    try:
        return ms.load_checkpoint(str(path))
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError on bad protobuf
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({type(exc).__name__}: {exc})") from None


def _tensors(raw: dict) -> dict[str, np.ndarray]:
    return {name: value.asnumpy() for name, value in raw.items() if not isinstance(value, str)}


def _embedded_config(raw: dict, path: Path) -> BertConfig | None:
    text = raw.get(CONFIG_KEY)
    if text is None:
        return None
    try:
        return BertConfig.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed embedded config ({exc})") from None


def read_ckpt(path) -> dict[str, np.ndarray]:
    """Every tensor of a `.ckpt` under the file's own names, as numpy arrays of the stored dtype
    (string entries such as an embedded config are left out). Parsed by MindSpore's protobuf
    reader: nothing in the file is executed."""
    return _tensors(_load(Path(path)))


def read_ckpt_config(path) -> BertConfig | None:
    """The BertConfig `write_ckpt` embedded in the file, if any."""
    return _embedded_config(_load(Path(path)), Path(path))


def write_ckpt(path, state: dict[str, np.ndarray], config: BertConfig | None = None) -> Path:
    """Write `state` (canonical names) to a `.ckpt` atomically: a temporary sibling renamed into
    place, so a crash never leaves half a file. Arrays keep their dtype and bytes exactly."""
    import mindspore as ms
    from mindspore import Tensor

    path = Path(path)
    if path.suffix != ".ckpt":
        raise CheckpointError(f"{path}: a MindSpore checkpoint file name must end in .ckpt")
    entries = [{"name": name, "data": Tensor(np.ascontiguousarray(value))} for name, value in state.items()]
    extra = {CONFIG_KEY: json.dumps(config.to_dict())} if config is not None else None
    # MindSpore appends ".ckpt" to names without it, so the temporary name keeps the suffix.
    write_atomically(path, lambda tmp: ms.save_checkpoint(entries, str(tmp), append_dict=extra),
                     keep_suffix=True, fsync=False)
    return path


def _config_for(path: Path, raw: dict) -> BertConfig:
    embedded = _embedded_config(raw, path)
    if embedded is not None:
        return embedded
    candidate = path.parent / "config.json"
    if candidate.is_file():
        return read_hf_config(candidate)
    raise CheckpointError(
        f"{path}: a .ckpt file does not record the model's shape (attention heads cannot be read from "
        f"tensor shapes); put a Hugging Face style config.json beside it")


def import_ckpt(path, *, prefix: str | None = None):
    """A `distill_engine.checkpoint.Checkpoint` from a `.ckpt` file (or a directory holding one):
    canonical-named files as written by `write_ckpt`, or zoo-named BERT/TinyBERT files (`prefix`
    picks one model from a file holding several, see `zoo_names.plan`).

    The config comes from the file (when embedded) or a `config.json` beside it; a classifier head
    or projection found in the file sets num_labels / projection "shared" accordingly (the zoo's
    networks have only the shared `fit_dense`; a "paper" or "per_entry" student is only ever written
    by `write_ckpt`, under canonical names with its config). Tensor names and shapes are checked
    against the config by the core.
    """
    import attrs

    from distill_engine.checkpoint import Checkpoint

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.ckpt"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: expected exactly one .ckpt file in the directory, found {len(files)}")
        path = files[0]
    raw = _load(path)
    tensors = _tensors(raw)
    config = _config_for(path, raw)
    embedded = raw.get(CONFIG_KEY) is not None  # the engine's own config: it states the head's activation
    if model_prefixes(tensors):
        try:
            state = zoo_to_canonical(tensors, config.num_hidden_layers, prefix=prefix)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        origin = "mindspore-zoo"
    else:
        state, origin = tensors, "mindspore"
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    if "classifier.weight" in state and config.num_labels != state["classifier.weight"].shape[0]:
        config = attrs.evolve(config, num_labels=int(state["classifier.weight"].shape[0]))
    if "fit_dense.weight" in state and config.projection == "none":
        config = attrs.evolve(config, projection="shared", projection_dim=int(state["fit_dense.weight"].shape[0]))
    vocab = path.parent / "vocab.txt"
    manifest = {"imported_from": str(path), "format": origin}
    if embedded:
        manifest["config"] = config.to_dict()
    return Checkpoint(config, state, manifest, vocab if vocab.is_file() else None)
