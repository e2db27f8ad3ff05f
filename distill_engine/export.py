"""`distill-engine export`: a checkpoint for the tools users use next.

    distill-engine export CHECKPOINT --to huggingface DIR        config.json, model.safetensors, vocab and tokenizer
    distill-engine export CHECKPOINT --to onnx FILE.onnx         an ONNX graph (torch backend), opset OPSET,
                                                                 and its tokenizer's files beside it
    distill-engine export CHECKPOINT --to mindspore FILE.ckpt    MindSpore model-zoo TinyBERT names
    distill-engine export CHECKPOINT --to mindir FILE.mindir     a MindIR graph (mindspore backend)

The core writes Hugging Face directories itself (safetensors, JSON and the `tokenizers` library:
no framework). The other formats are a backend's (`Backend.export_formats`, `export_model`,
`run_exported`; docs/writing-a-backend.md). Every export is checked before it becomes visible: a
weight format (huggingface, mindspore) is read back through the engine's own importer and must give
the exported tensors bit for bit; a graph format (onnx, mindir) is run by its runtime on batches of
two shapes and must give the numpy reference's outputs within `GRAPH_TOLERANCE`. The output is
written beside its final name and renamed into place, so a failed or killed export leaves nothing.

An ONNX graph takes token ids, so its tokenizer goes beside it: vocab.txt, tokenizer.json,
tokenizer_config.json and special_tokens_map.json in the graph's folder (the layout of Hugging
Face's optimum exports: `AutoTokenizer.from_pretrained(folder)` or
`tokenizers.Tokenizer.from_file(folder / "tokenizer.json")` encode what the engine encodes). They
are written, each atomically, after the graph passed its check and before the graph is renamed
into place: a failed export leaves no tokenizer either, and a graph in place has its tokenizer.

The classifier head: the engine's default head is TinyBERT's `classifier(relu(pooled))`
(`BertConfig.classifier_activation = "relu"`); Hugging Face's BertForSequenceClassification is
`classifier(pooled)`. A relu-head model is therefore refused for `--to huggingface` (transformers
would load it and silently compute other logits); onnx, mindspore and mindir keep the ReLU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BERT_VARIANT
from distill_engine.errors import BackendError, CheckpointError, DistillError
from distill_engine.io import write_atomically, write_directory_atomically
from distill_engine.models.registry import family_of

OPSET = 17  # the ONNX opset written (LayerNormalization is a native op from 17 on)
GRAPH_TOLERANCE = 1e-4  # |exported - reference| <= tol + tol * |reference|, for onnx and mindir


@attrs.frozen
class Target:
    name: str
    suffix: str  # "" for a directory
    backend: str | None  # the default backend that writes it; None: the core
    what: str


TARGETS = {t.name: t for t in (
    Target("huggingface", "", None,
           "a Hugging Face directory of the model's family (transformers' AutoModel / AutoTokenizer)"),
    Target("onnx", ".onnx", "torch", f"an ONNX graph, opset {OPSET}"),
    Target("mindspore", ".ckpt", "mindspore", "a MindSpore checkpoint with the model zoo's TinyBERT names"),
    Target("mindir", ".mindir", "mindspore", "a MindIR graph of the inference cell"),
)}
WEIGHT_TARGETS = ("huggingface", "mindspore")  # round-trip checked; the others run
HF_SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
              "mask_token": "[MASK]"}
# What `write_tokenizer` writes (a Hugging Face directory holds them; an ONNX graph has them beside it)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_TARGETS = ("huggingface", "onnx")  # the targets that carry a tokenizer (--vocab applies to them)

RELU_REFUSAL = (
    'its classifier is TinyBERT\'s head, classifier(relu(pooled)) (classifier_activation "relu"), and '
    "transformers' BertForSequenceClassification computes classifier(pooled): it would load the weights and "
    "give other logits. Train or fine-tune the student with student.classifier_activation = \"none\" (Hugging "
    "Face's head), or export --to onnx, mindspore or mindir, which keep the ReLU")


@attrs.frozen
class ExportRequest:
    checkpoint: Path
    to: str
    output: Path
    format: str | None = None  # the checkpoint's format; None: detected
    backend: str | None = None  # None: the target's default
    vocab: Path | None = None
    with_projection: bool = False
    overwrite: bool = False
    batch_size: int = 0  # graph formats: 0 = a dynamic axis
    seq_length: int = 0


# --------------------------------------------------------------------------- checks before any work

def detect_format(path: Path) -> str:
    """neutral (manifest.json), huggingface (config.json) or mindspore (a .ckpt, or a folder holding one)."""
    if path.is_file():
        if path.suffix == ".ckpt":
            return "mindspore"
        raise DistillError(f"CHECKPOINT {path}: not a checkpoint the engine reads (a neutral or Hugging Face "
                           "directory, or a MindSpore .ckpt); pass --format if it is one")
    if (path / "manifest.json").is_file():
        return "neutral"
    if (path / "config.json").is_file():
        return "huggingface"
    if len(list(path.glob("*.ckpt"))) == 1:
        return "mindspore"
    raise DistillError(f"CHECKPOINT {path}: neither manifest.json (neutral), config.json (huggingface) nor one "
                       ".ckpt (mindspore) in it; pass --format")


def check_request(req: ExportRequest) -> ExportRequest:
    """Everything that can be checked without loading the model; returns the request with its
    format detected. One DistillError naming the flag or file otherwise."""
    target = TARGETS[req.to]
    if not req.checkpoint.exists():
        raise DistillError(f"CHECKPOINT: not found: {req.checkpoint}")
    out = req.output
    if target.suffix and out.suffix != target.suffix:
        raise DistillError(f"--to {req.to} {out}: the file name must end in {target.suffix}")
    if out.exists() or out.is_symlink():
        if not req.overwrite:
            raise DistillError(f"--to {req.to} {out}: already exists; pass --overwrite to replace it")
        if target.suffix and out.is_dir():
            raise DistillError(f"--to {req.to} {out}: is a folder; {req.to} writes a file")
        if not target.suffix and not out.is_dir():
            raise DistillError(f"--to {req.to} {out}: is a file; huggingface writes a directory")
    if out.resolve() == req.checkpoint.resolve():
        raise DistillError(f"--to {req.to} {out}: is the checkpoint itself")
    if req.vocab is not None and not req.vocab.is_file():
        raise DistillError(f"--vocab: file not found: {req.vocab}")
    if req.vocab is not None and req.to not in TOKENIZER_TARGETS:
        raise DistillError(f"--vocab: only --to huggingface and onnx write a vocabulary (not {req.to})")
    if req.with_projection and req.to not in WEIGHT_TARGETS:
        raise DistillError(f"--with-projection: only --to huggingface or mindspore keep the projection; an {req.to} "
                           "graph computes the model's outputs, which do not use it")
    for flag, value in (("--batch-size", req.batch_size), ("--seq-length", req.seq_length)):
        if value < 0:
            raise DistillError(f"{flag} {value}: expected a positive whole number (leave it out for a dynamic axis)")
    if (req.batch_size or req.seq_length) and req.to in WEIGHT_TARGETS:
        flag = "--batch-size" if req.batch_size else "--seq-length"
        raise DistillError(f"{flag}: only the graph formats (onnx, mindir) have input shapes (not {req.to})")
    if req.backend is not None and target.backend is None:
        raise DistillError(f"--backend {req.backend}: --to {req.to} is written by the engine itself, without a backend")
    fmt = req.format or detect_format(req.checkpoint)
    return attrs.evolve(req, format=fmt)


def _backend_for(req: ExportRequest):
    from distill_engine.plugins import backend_registry, get_backend

    name = req.backend or TARGETS[req.to].backend
    backend = get_backend(name)
    if req.to not in tuple(getattr(backend, "export_formats", ())):
        able = [n for n in sorted(backend_registry()) if n != name and req.to in _formats_of(n)]
        others = f"; backends that can: {', '.join(able)}" if able else ""
        raise BackendError(f'--backend {name}: backend "{name}" does not export {req.to}{others}')
    return backend


def _formats_of(name: str) -> tuple[str, ...]:
    from distill_engine.plugins import get_backend

    try:
        return tuple(getattr(get_backend(name), "export_formats", ()))
    except DistillError:
        return ()


# --------------------------------------------------------------------------- the model to export

def load_for_export(req: ExportRequest):
    """(checkpoint, config, state) as the target gets them: checked tensors, the projection left
    out unless asked for, and the target's refusals (a relu head to huggingface, ...)."""
    from distill_engine.checkpoint import check_tensors
    from distill_engine.planning import check_finite, load_checkpoint

    ckpt = load_checkpoint(str(req.checkpoint), req.format, "CHECKPOINT")
    source = f"CHECKPOINT ({req.checkpoint})"
    check_tensors(ckpt.config, ckpt.state, source)
    check_finite(ckpt.state, source)
    config, state = ckpt.config, dict(ckpt.state)
    if req.with_projection:
        if config.projection == "none":
            raise DistillError(f"--with-projection: {req.checkpoint} has no projection (fit_dense)")
        if req.to == "mindspore" and config.projection in ("per_entry", "paper"):
            raise DistillError(f'--with-projection: {req.checkpoint} has projection "{config.projection}" (more than '
                               "one fit_dense); the model zoo has a name for one shared fit_dense only")
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fit_dense")}
        config = attrs.evolve(config, projection="none", projection_dim=0)
    if req.to == "huggingface" and config.num_labels and getattr(config, "head", "pooled") == "pooled" \
            and config.classifier_activation == "relu":  # (the token and span heads have no activation)
        raise DistillError(f"--to huggingface: {req.checkpoint} cannot be exported to Hugging Face: {RELU_REFUSAL}")
    if req.to == "mindspore" and any(getattr(config, k, v) != v for k, v in BERT_VARIANT.items()):
        # the zoo's names are for its BERT model, which would compute another network on them
        # (bert.BERT_VARIANT: BERT's values of the other families' fields)
        raise DistillError(f"--to mindspore: {req.checkpoint} is a {family_of(config).name} model; the MindSpore "
                           "model zoo's names are BERT's (export it --to huggingface, onnx or mindir)")
    if req.seq_length > config.max_sequence_length:
        raise DistillError(f"--seq-length {req.seq_length}: the model has {config.max_sequence_length} positions")
    return ckpt, config, state


# --------------------------------------------------------------------------- writing

def export(req: ExportRequest) -> str:
    """Write and check one export; returns the line to print."""
    req = check_request(req)
    backend = None if req.to == "huggingface" else _backend_for(req)  # a missing backend: before loading
    if req.to in TOKENIZER_TARGETS and req.to != "huggingface" and not req.overwrite:
        # the tokenizer goes beside the graph: another export's (or the user's) files are not replaced unasked
        taken = [name for name in TOKENIZER_FILES if (req.output.parent / name).exists()]
        if taken:
            raise DistillError(f"--to {req.to} {req.output}: its tokenizer is written beside it, and {req.output.parent} "
                               f"already holds {', '.join(taken)}; pass --overwrite to replace them, or export to "
                               "another folder")
    ckpt, config, state = load_for_export(req)
    head = getattr(config, "head", "pooled")
    shape = f"{config.num_hidden_layers} layers x {config.hidden_size}, " + (
        (f"{config.num_labels}-label head ({config.classifier_activation})" if head == "pooled" else
         f"{config.num_labels}-label {head} head") if config.num_labels else "no head")
    if req.to == "huggingface":
        check = export_huggingface(req, ckpt, config, state)
    else:
        tokenizer = None
        if req.to in TOKENIZER_TARGETS:  # checked before the (slow) graph is written
            vocab, size = _vocab_for(req, ckpt, config)
            tokenizer = (vocab, _labels_and_case(req.checkpoint, config.num_labels)[1], size)
        check = _export_file(req, backend, config, state, tokenizer)
    return f"exported {req.checkpoint} ({shape}) to {req.output}: {TARGETS[req.to].what}; {check}"


def _export_file(req: ExportRequest, backend, config, state, tokenizer: tuple[Path, bool, int] | None = None) -> str:
    def write(tmp: Path) -> tuple[dict, str]:
        info = backend.export_model(req.to, config, state, tmp, batch_size=req.batch_size,
                                    seq_length=req.seq_length) or {}
        if req.to in WEIGHT_TARGETS:
            return info, _check_round_trip(tmp, req.to, config, state)
        check = _check_outputs(backend, req, tmp, config, state)
        if tokenizer is not None:  # the graph passed: its tokenizer goes in place before it does
            vocab, lowercase, size = tokenizer
            files = tokenizer_files(vocab, lowercase, req.seq_length or config.max_sequence_length, family_of(config))
            for name, text in files.items():
                write_atomically(req.output.parent / name, lambda t, text=text: t.write_text(text, encoding="utf-8"))
            check += (f"; tokenizer beside it ({', '.join(files)}: vocab {vocab}, {size} tokens, "
                      f"{'lower-cased' if lowercase else 'cased'})")
        return info, check

    # the temporary name keeps the suffix (writers add or need it); the user's usual file mode
    # (MindSpore writes 0400) and the data on disk before the rename
    info, check = write_atomically(req.output, write, keep_suffix=True, user_mode=True)
    facts = ", ".join(f"{k} {v}" for k, v in info.items())
    return f"{facts + '; ' if facts else ''}{check}"


def _check_round_trip(path: Path, fmt: str, config, state) -> str:
    """The written checkpoint, read back through the engine's importer, is the export bit for bit."""
    from distill_engine.checkpoint import load_any

    back = load_any(path, fmt)
    if back.config != config:
        diff = {k: (v, getattr(back.config, k)) for k, v in config.to_dict().items() if getattr(back.config, k) != v}
        raise DistillError(f"--to {fmt}: the written checkpoint reads back with another config: {diff}")
    if set(back.state) != set(state):
        raise DistillError(f"--to {fmt}: the written checkpoint reads back with other tensors: "
                           f"{sorted(set(back.state) ^ set(state))}")
    for name, value in state.items():
        got, want = back.state[name], np.asarray(value, np.float32)
        if got.dtype != np.float32 or got.shape != want.shape or got.tobytes() != want.tobytes():
            raise DistillError(f"--to {fmt}: tensor {name} does not read back bit for bit")
    return f"read back through the engine's {fmt} importer: {len(state)} tensors bit for bit"


def check_batches(config, batch_size: int = 0, seq_length: int = 0, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Two batches of different shapes (or, with a fixed batch size and length, of that shape):
    random token ids, both segments, and padding in the first row."""
    rng = np.random.default_rng(seed)
    limit = config.max_sequence_length
    shapes = [(batch_size or 2, seq_length or min(8, limit)), (batch_size or 3, seq_length or min(13, limit))]
    batches = []
    for b, length in shapes:
        ids = rng.integers(0, config.vocab_size, (b, length)).astype(np.int64)
        types = np.zeros((b, length), np.int64)
        if config.type_vocab_size > 1:
            types[:, length // 2:] = 1
        mask = np.ones((b, length), np.int64)
        mask[0, max(1, length - length // 3):] = 0
        batches.append({"input_ids": ids, "token_type_ids": types * mask, "attention_mask": mask})
    return batches


def reference_outputs(config, state, batch) -> dict[str, np.ndarray]:
    """The engine's outputs by the exported graphs' names (Hugging Face's)."""
    taps = family_of(config).reference_forward(config, state, batch)
    if config.num_labels:
        return {"logits": taps.logits}
    return {"last_hidden_state": taps.hidden_states[-1], "pooler_output": taps.pooled}


def _check_outputs(backend, req: ExportRequest, path: Path, config, state) -> str:
    worst = 0.0
    shapes = []
    for batch in check_batches(config, req.batch_size, req.seq_length):
        got = backend.run_exported(req.to, path, batch)
        for name, expected in reference_outputs(config, state, batch).items():
            if name not in got:
                raise DistillError(f"--to {req.to}: the written graph has no output {name!r} (it has "
                                   f"{', '.join(got) or 'none'})")
            value = np.asarray(got[name], np.float64)
            if value.shape != expected.shape:
                raise DistillError(f"--to {req.to}: output {name} has shape {value.shape}, expected {expected.shape}")
            err = np.abs(value - expected)
            if not (err <= GRAPH_TOLERANCE * (1 + np.abs(expected))).all():
                raise DistillError(f"--to {req.to}: output {name} differs from the engine's by {err.max():.3g} on a "
                                   f"batch of shape {batch['input_ids'].shape} (tolerance {GRAPH_TOLERANCE:g}); "
                                   "nothing was written")
            worst = max(worst, float(err.max()))
        shapes.append("x".join(map(str, batch["input_ids"].shape)))
    return (f"run on batches {' and '.join(shapes)}: within {worst:.2g} of the engine's numpy reference "
            f"(tolerance {GRAPH_TOLERANCE:g})")


# --------------------------------------------------------------------------- Hugging Face

def _run_recipe(checkpoint: Path) -> dict | None:
    """The resolved recipe of the run that wrote a neutral checkpoint (<run>/<phase>/<name>), if any."""
    for folder in (checkpoint.parent.parent, checkpoint.parent):
        path = folder / "recipe.json"
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            doc = doc.get("recipe", doc) if isinstance(doc, dict) else None  # {"backend", "recipe"}
            return doc if isinstance(doc, dict) else None
    return None


def _labels_and_case(ckpt_path: Path, num_labels: int) -> tuple[list[str] | None, bool]:
    """The task's label names (for id2label) and whether the vocab is lower-cased, from the run's
    recipe.json or a Hugging Face tokenizer_config.json beside the checkpoint; (None, True) otherwise."""
    labels, lowercase = None, True
    recipe = _run_recipe(ckpt_path)
    if recipe is not None:
        data = recipe.get("data") or {}
        lowercase = bool(data.get("lowercase", True))
        task = data.get("task")
        try:
            if isinstance(task, str) and task:
                from distill_engine.data import get_task

                labels = list(get_task(task).labels or []) or None
            elif isinstance(task, dict):
                labels = [str(x) for x in task.get("labels") or []] or None
        except DistillError:
            labels = None
    tok_config = ckpt_path / "tokenizer_config.json" if ckpt_path.is_dir() else None
    if tok_config is not None and tok_config.is_file():
        try:
            lowercase = bool(json.loads(tok_config.read_text()).get("do_lower_case", lowercase))
        except (OSError, ValueError):
            pass
    if labels is not None and len(labels) != num_labels:
        labels = None
    return labels, lowercase


def hf_config(config, vocab: Path, labels: list[str] | None) -> dict:
    doc = family_of(config).config_to_hf(config)
    # the engine reads it back (a head it adds later, or this one: "none", Hugging Face's)
    doc["classifier_activation"] = config.classifier_activation
    if config.num_labels:
        names = labels or [f"LABEL_{i}" for i in range(config.num_labels)]
        doc["id2label"] = {str(i): name for i, name in enumerate(names)}
        doc["label2id"] = {name: i for i, name in enumerate(names)}
    if config.projection != "none":  # --with-projection: the engine reads the fit_dense* tensors back
        doc["projection"], doc["projection_dim"] = config.projection, config.projection_dim
    tokens = vocab.read_text(encoding="utf-8").split("\n")
    if "[PAD]" in tokens:
        doc["pad_token_id"] = tokens.index("[PAD]")
    doc["dtype"] = "float32"
    return doc


def hf_tensor_names(config, state: dict) -> dict[str, np.ndarray]:
    """Canonical -> the model family's Hugging Face names (BERT: BertForSequenceClassification's with
    a head, BertModel's without; fit_dense* keep their names)."""
    return family_of(config).to_hf_names(config, state)


def tokenizer_files(vocab: Path, lowercase: bool, max_length: int, family=None) -> dict[str, str]:
    """{file name: text} of TOKENIZER_FILES: vocab.txt, tokenizer.json (the `tokenizers` BERT
    WordPiece pipeline the engine tokenises with), tokenizer_config.json and
    special_tokens_map.json: what AutoTokenizer.from_pretrained reads. A family with a tokenizer of
    its own (`hf_tokenizer_files`: RoBERTa's BPE, XLM-R's Unigram) writes its files instead, its
    vocabulary file first."""
    from tokenizers import BertWordPieceTokenizer

    own = getattr(family, "hf_tokenizer_files", None)
    if own is not None:
        return own(vocab, max_length)

    return {
        "vocab.txt": vocab.read_text(encoding="utf-8"),
        "tokenizer.json": BertWordPieceTokenizer(str(vocab), lowercase=lowercase).to_str(),
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "model_max_length": max_length,
            "tokenize_chinese_chars": True, "strip_accents": None, "clean_up_tokenization_spaces": True,
            **HF_SPECIAL}, indent=2),
        "special_tokens_map.json": json.dumps(HF_SPECIAL, indent=2),
    }


def write_tokenizer(directory: Path, vocab: Path, lowercase: bool, max_length: int, family=None) -> None:
    """TOKENIZER_FILES (the family's) into `directory` (a temporary directory being filled: no atomic
    writes needed)."""
    first = getattr(family, "vocab_files", ("vocab.txt",))[0]
    shutil.copyfile(vocab, directory / first)  # byte for byte, whatever its line ends
    for name, text in tokenizer_files(vocab, lowercase, max_length, family).items():
        if name != first:
            (directory / name).write_text(text, encoding="utf-8")


def _vocab_for(req: ExportRequest, ckpt, config) -> tuple[Path, int]:
    """The vocabulary an export's tokenizer is built from (--vocab, else the checkpoint's) and its
    size, checked against the model's embedding; one line naming the flag or checkpoint otherwise."""
    from distill_engine.data.tokenizer import check_vocab

    vocab = req.vocab or ckpt.vocab
    if vocab is None:
        raise DistillError(f"--vocab: {req.checkpoint} has no vocab.txt beside it; pass --vocab FILE (the "
                           f"WordPiece vocabulary the model was trained with: --to {req.to} writes its tokenizer)")
    field = "--vocab" if req.vocab else f"CHECKPOINT ({req.checkpoint})"
    try:
        size = getattr(family_of(config), "check_vocab", check_vocab)(vocab)
    except DistillError as exc:
        raise DistillError(f"{field}: {exc}") from None
    if size > config.vocab_size:
        raise DistillError(f"{field}: {vocab} has {size} tokens, the model's embedding {config.vocab_size} rows")
    return Path(vocab), size


def export_huggingface(req: ExportRequest, ckpt, config, state) -> str:
    from safetensors.numpy import save_file

    vocab, size = _vocab_for(req, ckpt, config)
    labels, lowercase = _labels_and_case(req.checkpoint, config.num_labels)
    checked = []

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(hf_config(config, vocab, labels), indent=2))
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in hf_tensor_names(config, state).items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_tokenizer(tmp, vocab, lowercase, config.max_sequence_length, family_of(config))
        checked.append(_check_round_trip(tmp, "huggingface", config, state))

    req.output.parent.mkdir(parents=True, exist_ok=True)
    write_directory_atomically(req.output, fill)
    case = "lower-cased" if lowercase else "cased"
    return f"vocab {vocab} ({size} tokens, {case}); {checked[0]}"
