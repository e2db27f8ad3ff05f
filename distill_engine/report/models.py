"""The teacher and the student of a run side by side: their size (parameters, weights on disk) from
the checkpoints alone, and their inference speed measured on a few dev batches with a backend.

The speed needs the run's backend and dev file; when either is missing the report says why it has
no speed and keeps everything else (a run directory read on another machine still reports).
"""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.models.registry import parameter_shapes
from distill_engine.checkpoint import MANIFEST, WEIGHTS, load_any
from distill_engine.errors import DistillError
from distill_engine.report.rundata import ModelRef, RunData

# the dev batches timed: this many, spread over the dev set's batches (bucketed batches are sorted
# by length: the first ones would be the shortest sentences), each run.eval_batch_size rows; few,
# as the teacher passes over them 4 times at the end of every run
SPEED_BATCHES = 2
# parameters the engine trains for distillation only (TinyBERT's projection to the teacher's width)
TRAINING_ONLY = ("fit_dense.",)


@attrs.frozen
class ModelFacts:
    ref: ModelRef
    config: BertConfig | None
    parameters: int | None  # those inference uses (the projection excluded)
    training_only: int  # parameters of the projection, used only while distilling
    weights_file: Path | None
    weights_bytes: int | None
    note: str = ""  # why something is unknown


def _weights_file(ref: ModelRef) -> Path | None:
    if ref.path.is_file():
        return ref.path
    for name in (WEIGHTS, "pytorch_model.bin"):
        if (ref.path / name).is_file():
            return ref.path / name
    return None


def _config(ref: ModelRef) -> BertConfig:
    if ref.format == "neutral":
        import json

        from distill_engine.models.registry import DEFAULT_FAMILY, get_family

        manifest = json.loads((ref.path / MANIFEST).read_text())
        return get_family(manifest.get("family", DEFAULT_FAMILY)).config_from_dict(manifest["config"])
    if ref.format == "huggingface":
        from distill_engine.models.registry import read_hf_config

        return read_hf_config(ref.path / "config.json")
    return load_any(ref.path, ref.format).config  # another format: its plugin reads it whole


def describe(ref: ModelRef) -> ModelFacts:
    """Parameters (from the checkpoint's config: the tensors the engine builds) and weights size."""
    weights = _weights_file(ref)
    size = weights.stat().st_size if weights is not None else None
    try:
        config = _config(ref)
    except (DistillError, OSError, KeyError, TypeError, ValueError) as exc:
        return ModelFacts(ref, None, None, 0, weights, size, note=f"config unreadable: {exc}")
    shapes = parameter_shapes(config)
    count = {k: math.prod(v) for k, v in shapes.items()}
    extra = sum(n for k, n in count.items() if k.startswith(TRAINING_ONLY))
    return ModelFacts(ref, config, sum(count.values()) - extra, extra, weights, size)


def _speed_batches(run: RunData, vocab: Path | None, config=None) -> list[dict[str, np.ndarray]]:
    """A few dev batches as the run evaluated them (its padding and batching rules)."""
    from distill_engine.data import WordPieceTokenizer, batch_order, resolve_task, trim_padding
    from distill_engine.models.registry import family_of
    from distill_engine.recipe.loader import structure
    from distill_engine.tasks.registry import task_type_of

    recipe = structure(run.recipe, source=f"{run.path / 'recipe.json'}")
    data = recipe.data
    if not data.dev or not Path(data.dev).is_file():
        raise DistillError(f"the dev file {data.dev or '(data.dev is empty)'} is not here")
    vocab = Path(data.vocab) if data.vocab else vocab
    if vocab is None or not vocab.is_file():
        raise DistillError("no vocab.txt beside the checkpoints")
    # the rows the run evaluated: its task type reads and encodes them (recipe.json holds the
    # definition as the run completed it)
    task = resolve_task(data.task)
    task_type = task_type_of(task)
    examples = task_type.read(Path(data.dev), task)
    # the tokenizer of the models' family (`config`'s; BERT's WordPiece without one)
    tokenizer = (family_of(config).tokenizer(vocab, data.lowercase) if config is not None
                 else WordPieceTokenizer(vocab, lowercase=data.lowercase))
    dev = task_type.encode(examples, tokenizer, data.max_seq_length)
    order = batch_order(dev, recipe.run.eval_batch_size, shuffle=False, seed=0, batching=data.batching)
    full = [rows for rows in order if len(rows) == recipe.run.eval_batch_size] or order
    picked = [full[int(i)] for i in np.unique(np.linspace(0, len(full) - 1, SPEED_BATCHES).round())]
    cut = data.padding == "longest" or data.batching == "bucketed"  # as Runner.shape
    return [trim_padding(dev.batch(rows), data.pad_to_multiple_of) if cut else dev.batch(rows) for rows in picked]


def measure_speeds(run: RunData, facts: list[ModelFacts], backend=None, device=None) -> tuple[dict, str]:
    """{role: inference_speed's dict} for each model the backend can load, and a note saying on what
    it was measured, or why not (then the dict is empty). `backend`: a backend object, or None for
    the run's (by name); `device`: a Device, or None for the recipe's run.device."""
    from distill_engine.device import Device
    from distill_engine.plugins import get_backend
    from distill_engine.speed import inference_speed

    if run.recipe is None:
        return {}, "not measured: the run directory has no recipe.json"
    try:
        backend = backend if backend is not None else get_backend(run.backend or "")
        device = device if device is not None else Device.parse(run.recipe.get("run", {}).get("device", "cpu"))
        backend.check_device(device)
        from distill_engine.checkpoint import vocab_files

        # the family's vocabulary file beside a checkpoint (BERT's vocab.txt, RoBERTa's vocab.json)
        found = [(f.ref.path / (vocab_files(f.config)[0] if f.config is not None else "vocab.txt"), f.config)
                 for f in facts]
        vocab, config = next(((v, c) for v, c in found if v.is_file()), (None, None))
        batches = _speed_batches(run, vocab, config)
    except (DistillError, OSError, ValueError) as exc:
        return {}, f"not measured: {exc}"
    speeds, notes = {}, []
    for fact in facts:
        if fact.config is None or not fact.config.num_labels:
            notes.append(f"the {fact.ref.role} has no classification head to predict with")
            continue
        try:
            state = load_any(fact.ref.path, fact.ref.format).state
            model = backend.load_model(fact.config, state, device)
            speeds[fact.ref.role] = inference_speed(model, batches)
        except (DistillError, OSError, ValueError) as exc:
            notes.append(f"the {fact.ref.role} could not be loaded ({exc})")
        finally:
            model = state = None  # noqa: F841 (free the model before the next one is built)
    rows = batches[0]["input_ids"].shape[0]
    lengths = sorted({b["input_ids"].shape[1] for b in batches})
    note = (f"measured with backend {backend.name} ({backend.version()}) on {device}: `Model.predict` on "
            f"{len(batches)} dev batches of {rows} sentences ({', '.join(map(str, lengths))} tokens long), median "
            "of 3 passes after a warm-up pass")
    return speeds, "; ".join([note, *notes])
