"""BERT model description shared by every backend: config, canonical parameter names, initialisation.

The canonical names are Hugging Face's `BertModel` names (the ecosystem's lingua franca), with
the heads' names of Hugging Face's task models (`classifier.*` of the sequence- and
token-classification heads, `qa_outputs.*` of the span head; see `BertConfig.head`), and `fit_dense*` (the
TinyBERT projections from the student width to the teacher width, part of the student's state
so they travel from one phase to the next; `projection_names` gives them per mode). Weights of linear layers are stored `[out, in]`,
as in PyTorch and Hugging Face; every backend converts at its own boundary if it must.

Initialisation lives here, in numpy, so a fresh student is the same tensor on every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from distill_engine.errors import CheckpointError

ProjectionMode = Literal["none", "shared", "per_entry", "paper"]
PROJECTION_MODES: tuple[str, ...] = ProjectionMode.__args__  # type: ignore[attr-defined]
ACTIVATIONS = ("gelu", "gelu_new", "relu")
POOLER_ACTIVATIONS = ("tanh", "gelu", "relu")
POSITION_IDS = ("absolute", "after_padding")


@attrs.frozen
class BertConfig:
    """Shape and hyper-parameters of one BERT encoder (teacher or student), plus its heads.

    `head` is the model's head (the shapes of its logits: `distill_engine.graph.taps.HEAD_LOGITS`):

    - "pooled" (the default: every config and checkpoint from before heads existed): with
      `num_labels` > 0, `classifier.{weight [C, H], bias [C]}` on the pooled vector
      tanh(`pooler.dense`(h[:, 0])), through `classifier_activation` first ("relu": TinyBERT's
      classifier(relu(pooled)); "none": Hugging Face's BertForSequenceClassification);
      `num_labels` 0 means no head at all;
    - "token": `classifier.{weight [C, H], bias [C]}` applied to every position's final hidden
      state, logits [B, L, C] (BertForTokenClassification; `num_labels` > 0);
    - "span": `qa_outputs.{weight [2, H], bias [2]}` applied to every position's final hidden
      state, logits [B, L, 2]: start = [..., 0], end = [..., 1] (BertForQuestionAnswering;
      `num_labels` is 2, the two logits).

    Every head keeps `pooler.dense.*` in the state (and the `pooled` tap): an encoder's pooler
    loads and travels from one phase to the next whatever the head, although the token and span
    logits do not read it (Hugging Face's BertForTokenClassification and BertForQuestionAnswering
    have none: an import of theirs gets a fresh one, see `checkpoint.load_huggingface`). No dropout
    runs before a head (TinyBERT's pooled head has none), and `classifier_activation` applies to
    the pooled head only.

    `projection` adds TinyBERT's learnable
    projections to `projection_dim` (the teacher's width), under these canonical names:

    - "shared": one `fit_dense.{weight,bias}` for every hidden-state entry (the original PyTorch code;
      the MindSpore zoo's `fit_dense` too);
    - "paper": the paper's W_e and W_h: `fit_dense.embeddings.{weight,bias}` for entry 0 (the
      embedding output) and one `fit_dense.layers.{weight,bias}` shared by the layer entries 1..L;
    - "per_entry": one `fit_dense.{i}.{weight,bias}` per entry i = 0..L;
    - "none": no projection (the widths must then be equal).

    `pad_token_id` is the [PAD] token's row of the word embeddings: a trainer leaves that row's
    gradient at zero unless `TrainSpec.freeze_pad_embedding` is off (Hugging Face BERT's and the
    original TinyBERT's `nn.Embedding(padding_idx=...)`). Hugging Face configs carry it; 0 otherwise
    (BERT's vocabularies, the MindSpore zoo's).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    num_labels: int = 0
    classifier_activation: Literal["relu", "none"] = "relu"
    head: Literal["pooled", "token", "span"] = "pooled"
    projection: ProjectionMode = "none"
    projection_dim: int = 0
    pad_token_id: int = 0
    # The encoder variants of the families built on BERT's network (distill_engine.models.*):
    # RoBERTa's positions ("after_padding": padding_idx + 1 onwards over the non-[PAD] tokens, [PAD]
    # itself at padding_idx), ELECTRA's smaller embeddings (`embedding_size` > 0 and not
    # hidden_size: the tables, their LayerNorm, then `embeddings_project` [H, E]), DistilBERT's
    # absent token types (`type_vocab_size` 0), and the activation of the sequence head's first
    # dense (`pooler.dense`: tanh for BERT's pooler and RoBERTa's classifier.dense, gelu for
    # ELECTRA's, relu for DistilBERT's pre_classifier). BERT's values are the defaults.
    position_ids: Literal["absolute", "after_padding"] = "absolute"
    embedding_size: int = 0
    pooler_activation: Literal["tanh", "gelu", "relu"] = "tanh"

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise CheckpointError(f'hidden_act "{self.hidden_act}" is not one of {", ".join(ACTIVATIONS)}')
        from distill_engine.graph.taps import HEADS  # (the graph package imports this module)

        if self.head not in HEADS:
            raise CheckpointError(f'head "{self.head}" is not one of {", ".join(HEADS)}')
        if self.head == "token" and self.num_labels <= 0:
            raise CheckpointError('head "token" needs num_labels > 0 (the tags per position)')
        if self.head == "span" and self.num_labels != 2:
            raise CheckpointError(f'head "span" has num_labels 2 (start and end logits), not {self.num_labels}')
        if self.pooler_activation not in POOLER_ACTIVATIONS:
            raise CheckpointError(f'pooler_activation "{self.pooler_activation}" is not one of '
                                  f'{", ".join(POOLER_ACTIVATIONS)}')
        if self.position_ids not in POSITION_IDS:
            raise CheckpointError(f'position_ids "{self.position_ids}" is not one of {", ".join(POSITION_IDS)}')
        if self.type_vocab_size < 0 or self.embedding_size < 0:
            raise CheckpointError("type_vocab_size and embedding_size are not negative")
        if self.projection != "none" and self.projection_dim <= 0:
            raise CheckpointError(f'projection "{self.projection}" needs projection_dim > 0')
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise CheckpointError(f"pad_token_id {self.pad_token_id} is not a row of the word embeddings "
                                  f"(vocab_size {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_width(self) -> int:
        """The width of the embedding tables (ELECTRA's embedding_size; BERT's hidden_size)."""
        return self.embedding_size or self.hidden_size

    @property
    def max_sequence_length(self) -> int:
        """The longest sequence the position table holds: RoBERTa's positions start at
        pad_token_id + 1 (514 rows, 512 tokens)."""
        offset = self.pad_token_id + 1 if self.position_ids == "after_padding" else 0
        return self.max_position_embeddings - offset

    @property
    def projects_embeddings(self) -> bool:
        """Whether `embeddings_project` maps the embeddings to hidden_size (ELECTRA's small ones)."""
        return self.embedding_width != self.hidden_size

    def to_dict(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BertConfig":
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_hf_config(cls, path: Path) -> "BertConfig":
        """Read a Hugging Face BERT `config.json` (keys this engine does not model are ignored): the
        BERT family's reading (`distill_engine.models.builtin.BertFamily.config_from_hf`), through
        the family registry; a config.json of another family is refused."""
        from distill_engine.models.registry import read_hf_config

        config = read_hf_config(path)
        if type(config) is not cls:
            raise CheckpointError(f"{path}: not a BERT config.json (it reads as {type(config).__name__})")
        return config

    def to_hf_config(self) -> dict:
        """The Hugging Face `config.json` for this encoder (projections are not part of it)."""
        data = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("num_labels", "classifier_activation", "projection", "projection_dim", "head", *VARIANT_FIELDS)
        }
        arch = HF_ARCHITECTURES[self.head] if self.num_labels else "BertModel"
        return {"architectures": [arch], "model_type": "bert", "num_labels": self.num_labels or 2, **data}


# BertConfig's fields of the other families' variants (not in a BERT config.json), and BERT's values
VARIANT_FIELDS = ("position_ids", "embedding_size", "pooler_activation")
BERT_VARIANT = {f.name: f.default for f in attrs.fields(BertConfig) if f.name in VARIANT_FIELDS}

# The Hugging Face class of each head (a pooled config without labels is a BertModel).
HF_ARCHITECTURES = {"pooled": "BertForSequenceClassification", "token": "BertForTokenClassification",
                    "span": "BertForQuestionAnswering"}


def hf_head(data: dict) -> dict:
    """{"head", "num_labels"} of a Hugging Face config.json's dict, by its architecture:
    ...ForSequenceClassification: the pooled head, ...ForTokenClassification: the token head (each
    with the config's num_labels), ...ForQuestionAnswering: the span head; anything else (BertModel,
    pre-training classes): no head."""
    architectures = data.get("architectures", []) or []
    labels = int(data.get("num_labels", len(data.get("id2label", {})) or 2))
    for head, suffix in (("pooled", "ForSequenceClassification"), ("token", "ForTokenClassification")):
        if any(a.endswith(suffix) for a in architectures):
            return {"head": head, "num_labels": labels}
    if any(a.endswith("ForQuestionAnswering") for a in architectures):
        return {"head": "span", "num_labels": 2}
    return {"head": "pooled", "num_labels": 0}


def num_projections(config: BertConfig) -> int:
    """How many distinct projections the student has (see `projection_entries`)."""
    return {"none": 0, "shared": 1, "paper": 2, "per_entry": config.num_hidden_layers + 1}[config.projection]


def projection_prefix(config: BertConfig, entry: int) -> str:
    """The name (without ".weight"/".bias") of the projection used for hidden-state entry `entry`
    (0 = embeddings), as BertConfig's docstring lists them per mode."""
    if config.projection == "shared":
        return "fit_dense"
    if config.projection == "paper":
        return "fit_dense.embeddings" if entry == 0 else "fit_dense.layers"
    if config.projection == "per_entry":
        return f"fit_dense.{entry}"
    raise ValueError("model has no projection")


def projection_prefixes(config: BertConfig) -> list[str]:
    """Every distinct projection's name, in the order of the first entry that uses it."""
    return list(dict.fromkeys(projection_prefix(config, e) for e in range(config.num_hidden_layers + 1))) \
        if config.projection != "none" else []


def projection_names(config: BertConfig, entry: int) -> tuple[str, str]:
    """(weight, bias) names of the projection used for hidden-state entry `entry` (0 = embeddings)."""
    prefix = projection_prefix(config, entry)
    return f"{prefix}.weight", f"{prefix}.bias"


def parameter_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical parameter name with its shape, in a stable order: the one source of truth."""
    h, i, e = config.hidden_size, config.intermediate_size, config.embedding_width
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, e),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, e),
    }
    if config.type_vocab_size:
        shapes["embeddings.token_type_embeddings.weight"] = (config.type_vocab_size, e)
    shapes["embeddings.LayerNorm.weight"] = (e,)
    shapes["embeddings.LayerNorm.bias"] = (e,)
    if config.projects_embeddings:
        shapes["embeddings_project.weight"] = (h, e)
        shapes["embeddings_project.bias"] = (h,)
    for layer in range(config.num_hidden_layers):
        p = f"encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"] = (h, h)
            shapes[p + name + ".bias"] = (h,)
        shapes[p + "attention.output.LayerNorm.weight"] = (h,)
        shapes[p + "attention.output.LayerNorm.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (i, h)
        shapes[p + "intermediate.dense.bias"] = (i,)
        shapes[p + "output.dense.weight"] = (h, i)
        shapes[p + "output.dense.bias"] = (h,)
        shapes[p + "output.LayerNorm.weight"] = (h,)
        shapes[p + "output.LayerNorm.bias"] = (h,)
    shapes["pooler.dense.weight"] = (h, h)
    shapes["pooler.dense.bias"] = (h,)
    head = head_prefix(config)
    if head:
        shapes[head + ".weight"] = (config.num_labels, h)
        shapes[head + ".bias"] = (config.num_labels,)
    for prefix in projection_prefixes(config):
        shapes[prefix + ".weight"] = (config.projection_dim, h)
        shapes[prefix + ".bias"] = (config.projection_dim,)
    return shapes


def head_prefix(config: BertConfig) -> str:
    """The head's parameter name without ".weight"/".bias": "classifier" (pooled and token heads),
    "qa_outputs" (span head), or "" for a model without a head."""
    if not config.num_labels:
        return ""
    return "qa_outputs" if config.head == "span" else "classifier"


def is_no_decay(name: str) -> bool:
    """TinyBERT's (and BERT's) weight-decay exclusions: biases and LayerNorm parameters."""
    return name.endswith(".bias") or ".LayerNorm." in name or name.startswith("LayerNorm.")


def init_parameters(config: BertConfig, seed: int, only: set[str] | None = None) -> dict[str, np.ndarray]:
    """Fresh float32 parameters as BERT initialises them: N(0, initializer_range) for matrices and
    embeddings, zeros for biases, ones/zeros for LayerNorm. Each tensor draws from its own
    generator seeded by (seed, its name), so adding a head does not change the encoder's draw.
    `only` restricts the result to those names (e.g. a new head on an imported encoder)."""
    out: dict[str, np.ndarray] = {}
    for name, shape in parameter_shapes(config).items():
        if only is not None and name not in only:
            continue
        if ".LayerNorm." in name or name.startswith("embeddings.LayerNorm"):
            out[name] = (np.ones if name.endswith("weight") else np.zeros)(shape, np.float32)
        elif name.endswith(".bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            rng = np.random.default_rng([seed, *name.encode()])
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * config.initializer_range).astype(np.float32)
    return out
