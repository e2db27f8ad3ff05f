"""Tiny but real-format inputs: a Hugging Face BERT directory, a vocab, GLUE TSVs, a corpus, a recipe.

Used by the core's and the backends' tests to run whole pipelines in seconds, and by backend
authors to check a plugin end to end without downloading anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from distill_engine.bert import BertConfig, init_parameters

WORDS = ("good great fine nice bad awful poor dull movie film plot actor the a is was very not "
         "and but it this that story fun boring").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path) -> Path:
    path.write_text("\n".join(SPECIAL + WORDS) + "\n")
    return path


def tiny_config(**overrides) -> BertConfig:
    # Hugging Face's head, as a recipe's default student and teacher have (a checkpoint stating the
    # other head is refused as their student.init): pass classifier_activation="relu" for TinyBERT's
    base = dict(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                intermediate_size=32, max_position_embeddings=32, classifier_activation="none")
    return BertConfig(**{**base, **overrides})


def write_hf_bert(directory: Path, config: BertConfig | None = None, seed: int = 0) -> Path:
    """A Hugging Face style BERT directory (config.json, model.safetensors with "bert." names, vocab.txt)."""
    config = config or tiny_config()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_hf_config()))
    state = {("bert." + k if not k.startswith("classifier") else k): v for k, v in init_parameters(config, seed).items()}
    state["bert.embeddings.position_ids"] = np.arange(config.max_position_embeddings, dtype=np.int64)[None]
    save_file(state, str(directory / "model.safetensors"))
    write_vocab(directory / "vocab.txt")
    return directory


def write_sst2_like(directory: Path, n_train: int = 64, n_dev: int = 32, seed: int = 0,
                    words: tuple[int, int] = (5, 5)) -> tuple[Path, Path]:
    """SST-2 format TSVs whose label is learnable from the words (positive vs negative adjectives).

    Each sentence has `words` (lowest, highest) words, one of them the adjective; (5, 5), the
    default, writes the files it always wrote (every sentence 7 tokens with [CLS] and [SEP]).
    """
    rng = np.random.default_rng(seed)
    pos, neg, filler = WORDS[:4], WORDS[4:8], WORDS[8:]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = int(rng.integers(2))
            fillers = 4 if words == (5, 5) else int(rng.integers(words[0], words[1] + 1)) - 1
            words_of = list(rng.choice(filler, fillers)) + [rng.choice(pos if label else neg)]
            rng.shuffle(words_of)
            lines.append(" ".join(words_of) + f"\t{label}")
        (directory / name).write_text("\n".join(lines) + "\n")
        paths.append(directory / name)
    return paths[0], paths[1]


def write_corpus(path: Path, documents: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    docs = ["\n".join(" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(5)) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


def write_tiny_recipe(root: Path, *, student_heads: int = 4, extra: str = "",
                      words: tuple[int, int] = (5, 5)) -> Path:
    """A complete TinyBERT SST-2 style recipe over tiny files under `root` (teacher 4 layers, student 2).

    `words`: the (lowest, highest) words per sentence of the GLUE files (max_seq_length 12 holds 10).
    """
    teacher = write_hf_bert(root / "teacher")
    train, dev = write_sst2_like(root / "glue", words=words)
    corpus = write_corpus(root / "corpus.txt")
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
seed = 1
output_dir = "{root / 'run'}"
log_every = 1
eval_batch_size = 16

[teacher]
path = "{teacher.name}"

[student]
layers = 2
hidden_size = 8
heads = {student_heads}
intermediate_size = 16
dropout = 0.0
attention_dropout = 0.0

[data]
task = "sst2"
train = "glue/{train.name}"
dev = "glue/{dev.name}"
corpus = "{corpus.name}"
max_seq_length = 12

[[phases]]
name = "teacher"
kind = "teacher_finetune"
epochs = 2
batch_size = 8
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "gd"
kind = "general_distill"
data = "corpus"
max_steps = 3
batch_size = 4
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "td1"
kind = "task_distill_intermediate"
epochs = 1
batch_size = 8
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "td2"
kind = "task_distill_prediction"
epochs = 3
batch_size = 8
eval_every = 4
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "eval"
kind = "evaluate"
data = "dev"
{extra}
""")
    return recipe


def register_loss_implementations_like(register, backend: str, like: str = "torch") -> None:
    """Inside a `register_loss_implementations` hook: give test backend `backend`, a subclass of
    the built-in backend `like` ("torch" or "mindspore") that trains with its trainer, that
    backend's implementations of every built-in loss kind (plan() checks them by backend name)."""
    from distill_engine.losses.builtin import builtin_implementations
    from distill_engine.tasks.token.losses import token_implementations

    for kind, function in builtin_implementations(f"distill_engine_{like}.losses").items():
        register(kind, backend, function)
    for kind, function in token_implementations(f"distill_engine_{like}.token_losses").items():
        register(kind, backend, function)
