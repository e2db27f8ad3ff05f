"""Masked-LM word candidates for TinyBERT's data augmentation, batched on any backend.

TinyBERT's `data_augmentation.py` replaces a word that is a single WordPiece by the top-K
predictions of a BERT masked LM, one forward per word. For the sentence's wordpieces `pieces`
(no specials) and the index `j` of the piece to replace, the model reads

    [CLS] pieces-with-pieces[j]-replaced-by-[MASK] [SEP] pieces [SEP]
    segment 0 ...................................... | 1 ........

truncated to `max_position_embeddings` tokens (the tail is cut, so the unmasked copy goes first,
then the final [SEP], exactly as the original's `tokens[:512]`), and the masked-LM logits at the
mask (index j + 1) are sorted descending; the top K ids are taken and pieces starting with "##"
dropped, so at most K words remain. This module computes the same for many queries at once:
queries are grouped by input length, cut into batches of `batch_size` and each batch padded to its
own longest length rounded up to a multiple of 16 (`PAD_MULTIPLE`, fewer distinct shapes for a
compiling backend such as MindSpore); results come back in the queries' order.

Deliberate deviations from the original, all in `MaskedLM.candidates`:
- special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) are dropped from the top K as "##" pieces are
  (writing "[SEP]" into a sentence is never a useful augmentation); so are ids the vocab.txt has no
  line for (a model whose vocab_size is padded beyond its vocabulary);
- ties are broken by the lower token id: a stable sort of -logits (float64, from the float32
  logits), so results are deterministic (torch.argsort's order among equal values is not);
- a query whose first copy ([CLS] masked-pieces [SEP]) does not fit in max_position_embeddings
  gets no candidates (the original would read a truncated sentence, or fail once the mask falls
  beyond the input).

The masked-LM head (`MaskedLmHead`) is applied in numpy (float32) to the last hidden state at the
mask positions only: t = LayerNorm(act(h @ W_d.T + b_d)); logits = t @ E.T + bias, with the
config's `hidden_act` and `layer_norm_eps`. Its tensors are read from the checkpoint's weight file
(`load_any` drops heads from the encoder's state):
- Hugging Face (`BertForMaskedLM`, `BertForPreTraining`): `cls.predictions.transform.dense.{weight,
  bias}`, `cls.predictions.transform.LayerNorm.{weight,bias}` (or `.gamma/.beta`),
  `cls.predictions.bias` (or `cls.predictions.decoder.bias`), and `cls.predictions.decoder.weight`
  when the file has it, else the tied word embeddings;
- the MindSpore model zoo (its `GetMaskedLMOutput` in a pre-training checkpoint): `{H}cls1.dense.
  {weight,bias}`, `{H}cls1.layernorm.{gamma,beta}`, `{H}cls1.output_bias` with any prefix H (e.g.
  "bert."), the decoder tied to the word embedding table. These are the names the mindspore
  plugin's `zoo_names` accounts for as the masked-LM head and drops from the encoder. Note that the
  zoo's own head computes its LayerNorm with MindSpore's default epsilon 1e-7 and its activation
  with MindSpore's default GELU (tanh approximation); here the config beside the .ckpt decides
  (hidden_act "gelu_new" is the tanh form), as it does for the encoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BertConfig, parameter_shapes
from distill_engine.checkpoint import check_tensors, load_any, read_weights
from distill_engine.errors import CheckpointError, DataError

PAD_MULTIPLE = 16  # each batch is padded to a multiple of this (capped at max_position_embeddings)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Hugging Face names of the head: (role, accepted names in order of preference).
_HF_HEAD = {
    "dense.weight": ("cls.predictions.transform.dense.weight",),
    "dense.bias": ("cls.predictions.transform.dense.bias",),
    "norm.weight": ("cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.gamma"),
    "norm.bias": ("cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.beta"),
    "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias"),
}
_HF_DECODER = "cls.predictions.decoder.weight"
# MindSpore model-zoo names, relative to "{H}cls1.".
_ZOO_HEAD = {
    "dense.weight": "dense.weight",
    "dense.bias": "dense.bias",
    "norm.weight": "layernorm.gamma",
    "norm.bias": "layernorm.beta",
    "bias": "output_bias",
}
_ZOO_NAME = re.compile(r"^(?P<prefix>(?:[^.]+\.)*?)cls1\.(?P<rest>dense\.weight|dense\.bias|layernorm\.gamma|"
                       r"layernorm\.beta|output_bias)$")


@attrs.frozen
class MaskQuery:
    """One word to replace: the sentence's wordpiece ids (no specials) and the index of the piece
    to mask."""

    piece_ids: tuple[int, ...] = attrs.field(converter=lambda ids: tuple(int(i) for i in ids))
    position: int = attrs.field(converter=int)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.position < len(self.piece_ids):
            raise DataError(f"mask position {self.position} is outside the sentence's {len(self.piece_ids)} pieces")


@attrs.frozen(eq=False)
class MaskedLmHead:
    """BERT's masked-LM head (`BertOnlyMLMHead` / the zoo's `GetMaskedLMOutput`) as float32 numpy.

    `dense_weight` [H, H] and `dense_bias` [H] (the transform), `norm_weight`/`norm_bias` [H] (its
    LayerNorm, epsilon `eps`), `activation` one of `distill_engine.bert.ACTIVATIONS`, `decoder`
    [V, H] (the word embeddings when tied) and `bias` [V]."""

    dense_weight: np.ndarray
    dense_bias: np.ndarray
    norm_weight: np.ndarray
    norm_bias: np.ndarray
    decoder: np.ndarray
    bias: np.ndarray
    activation: str = "gelu"
    eps: float = 1e-12

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Masked-LM logits [n, V] (float32) of last-layer hidden states `hidden` [n, H]."""
        from distill_engine.reference import activation

        h = np.asarray(hidden, np.float32)
        t = h @ self.dense_weight.T + self.dense_bias
        t = np.asarray(activation(t, self.activation), np.float32)
        mean = t.mean(-1, keepdims=True)
        var = ((t - mean) ** 2).mean(-1, keepdims=True)
        t = (t - mean) / np.sqrt(var + np.float32(self.eps)) * self.norm_weight + self.norm_bias
        return (t @ self.decoder.T + self.bias).astype(np.float32)


def masked_lm_head(tensors: Mapping[str, np.ndarray], config: BertConfig, word_embeddings: np.ndarray,
                   source: str, fmt: str = "huggingface") -> MaskedLmHead:
    """The masked-LM head found in a weight file's `tensors` (its own names): Hugging Face
    `cls.predictions.*` or MindSpore zoo `{H}cls1.*` (see the module docstring). `word_embeddings`
    [V, H] is the decoder when the file has none of its own (tied). A head that is absent or only
    partly present, or has a wrong shape, is one CheckpointError naming `source` and the tensors."""
    h, v = config.hidden_size, config.vocab_size
    found: dict[str, np.ndarray] = {}
    decoder = None
    hf = {role: next((n for n in names if n in tensors), None) for role, names in _HF_HEAD.items()}
    zoo_prefixes = sorted({m["prefix"] for m in map(_ZOO_NAME.match, tensors) if m})
    if any(hf.values()):
        missing = [names[0] for role, names in _HF_HEAD.items() if hf[role] is None]
        if missing:
            raise CheckpointError(f"{source}: the masked-LM head is incomplete: missing {', '.join(missing)}")
        found = {role: tensors[name] for role, name in hf.items()}
        decoder = tensors.get(_HF_DECODER)
        names = {role: name for role, name in hf.items()} | {"decoder": _HF_DECODER}
    elif zoo_prefixes:
        if len(zoo_prefixes) > 1:
            raise CheckpointError(f"{source}: more than one masked-LM head (cls1.*) in the file, under prefixes "
                                  f"{', '.join(repr(p) for p in zoo_prefixes)}")
        prefix = zoo_prefixes[0] + "cls1."
        missing = [prefix + rest for rest in _ZOO_HEAD.values() if prefix + rest not in tensors]
        if missing:
            raise CheckpointError(f"{source}: the masked-LM head is incomplete: missing {', '.join(missing)}")
        found = {role: tensors[prefix + rest] for role, rest in _ZOO_HEAD.items()}
        names = {role: prefix + rest for role, rest in _ZOO_HEAD.items()}
    else:
        expected = ([names[0] for names in _HF_HEAD.values()] if fmt == "huggingface"
                    else [f"bert.cls1.{rest}" for rest in _ZOO_HEAD.values()])
        raise CheckpointError(f"{source}: the checkpoint has no masked-LM head (missing {', '.join(expected)}); "
                              "masked-LM candidates need a BertForMaskedLM or BertForPreTraining checkpoint")
    if decoder is None:
        decoder, names["decoder"] = word_embeddings, "embeddings.word_embeddings.weight (tied)"
    found["decoder"] = decoder
    shapes = {"dense.weight": (h, h), "dense.bias": (h,), "norm.weight": (h,), "norm.bias": (h,),
              "decoder": (v, h), "bias": (v,)}
    bad = [f"{names[role]} {tuple(np.shape(found[role]))} (expected {shape})" for role, shape in shapes.items()
           if tuple(np.shape(found[role])) != shape]
    if bad:
        raise CheckpointError(f"{source}: masked-LM head of the wrong shape for the config (hidden {h}, "
                              f"vocab {v}): {', '.join(bad)}")
    f32 = {role: np.ascontiguousarray(value, np.float32) for role, value in found.items()}
    return MaskedLmHead(f32["dense.weight"], f32["dense.bias"], f32["norm.weight"], f32["norm.bias"],
                        f32["decoder"], f32["bias"], activation=config.hidden_act, eps=config.layer_norm_eps)


def _head_tensors(path: Path, fmt: str) -> tuple[dict[str, np.ndarray], Path]:
    """The raw tensors of the checkpoint's weight file (never unpickled: safetensors, or a
    plugin's reader), and that file's path. Of a safetensors file only the head is read."""
    if fmt == "huggingface":
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint directory not found")
        if (path / "model.safetensors").is_file():
            return _safetensors_head(path / "model.safetensors"), path / "model.safetensors"
        if (path / "pytorch_model.bin").is_file():
            return read_weights(path / "pytorch_model.bin"), path / "pytorch_model.bin"
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")
    if path.is_dir():
        files = sorted(path.glob("*.ckpt"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: expected exactly one .ckpt file in the directory, found {len(files)}")
        path = files[0]
    return read_weights(path), path


def _safetensors_head(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith("cls.") or _ZOO_NAME.match(k)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None


def _encoder_state(config: BertConfig, state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The encoder's tensors checked against `config`; a missing pooler (BertForMaskedLM has none,
    and the masked LM does not read it) is filled with zeros."""
    wanted = parameter_shapes(config)
    state = {k: v for k, v in state.items() if k in wanted}
    missing = check_tensors(config, state, source, allow_missing=("pooler.",))
    return state | {k: np.zeros(wanted[k], np.float32) for k in missing}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _load_parts(path: Path, fmt: str, vocab):
    """(encoder config, encoder state, head, tokenizer) of a masked-LM checkpoint, all checked."""
    from distill_engine.data.tokenizer import WordPieceTokenizer

    ckpt = load_any(path, fmt)
    config = attrs.evolve(ckpt.config, num_labels=0, projection="none", projection_dim=0)
    state = _encoder_state(config, ckpt.state, str(path))
    tensors, weights = _head_tensors(path, fmt)
    head = masked_lm_head(tensors, config, state["embeddings.word_embeddings.weight"], str(weights), fmt)
    del tensors
    vocab = vocab if vocab is not None else ckpt.vocab
    if vocab is None:
        where = "beside config.json" if fmt == "huggingface" else "beside the .ckpt; or pass vocab="
        raise CheckpointError(f"{path}: no vocab.txt ({where}); the candidates are tokens of it")
    tokenizer = WordPieceTokenizer(vocab)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{vocab}: {tokenizer.vocab_size} tokens, but the model's vocab_size is "
                              f"{config.vocab_size}: not this model's vocabulary")
    return config, state, head, tokenizer


def check_masked_lm(path, fmt: str = "huggingface", vocab=None) -> None:
    """Check a masked-LM checkpoint as `MaskedLM` reads it (encoder, head, vocab), without building
    a model: a recipe's preflight."""
    _load_parts(Path(path), fmt, vocab)


class MaskedLM:
    """A BERT masked LM on a backend: top-K replacement candidates for many words at once.

    `path`/`fmt`: a Hugging Face directory ("huggingface": config.json, model.safetensors or
    pytorch_model.bin, vocab.txt) or a MindSpore .ckpt ("mindspore": config.json beside it), read
    with `distill_engine.checkpoint.load_any`. `vocab`: the vocab.txt, by default the checkpoint's
    (required: a .ckpt seldom has one beside it). The model is built on `backend` (a registered
    backend name) and `device` once; `batch_size` queries go through one forward."""

    def __init__(self, path, fmt: str = "huggingface", backend: str = "torch", device: str = "cpu",
                 batch_size: int = 64, vocab=None) -> None:
        from distill_engine import plugins
        from distill_engine.device import Device

        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        config, state, self.head, self.tokenizer = _load_parts(Path(path), fmt, vocab)
        self.vocab_tokens: list[str] = [self.tokenizer.id_to_token(i) for i in range(self.tokenizer.vocab_size)]
        self.config = config
        self.batch_size = int(batch_size)
        self._backend = plugins.get_backend(backend)
        self.model = self._backend.load_model(config, state, Device.parse(device))
        t = self.tokenizer
        self._special_ids = frozenset((t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id))

    # --- inputs --------------------------------------------------------------------------------
    def pair_input(self, query: MaskQuery) -> tuple[list[int], list[int]] | None:
        """The original's input ids and segment ids for one query (see the module docstring), or
        None when its first copy does not fit in max_position_embeddings."""
        t, pieces, j = self.tokenizer, list(query.piece_ids), query.position
        n, limit = len(pieces), self.config.max_position_embeddings
        if n + 2 > limit:
            return None
        masked = pieces[:j] + [t.mask_id] + pieces[j + 1:]
        ids = [t.cls_id, *masked, t.sep_id, *pieces, t.sep_id][:limit]
        types = ([0] * (n + 2) + [1] * (n + 1))[:limit]
        return ids, types

    def _check(self, queries: Sequence[MaskQuery]) -> list[MaskQuery]:
        queries = list(queries)
        v = self.config.vocab_size
        for i, q in enumerate(queries):
            if not isinstance(q, MaskQuery):
                raise DataError(f"query {i} is a {type(q).__name__}, expected a MaskQuery")
            bad = [p for p in q.piece_ids if not 0 <= p < v]
            if bad:
                raise DataError(f"query {i}: piece id {bad[0]} is outside the vocabulary (size {v})")
        return queries

    # --- the forward ---------------------------------------------------------------------------
    def logits(self, queries: Iterable[MaskQuery], progress: bool = False) -> np.ndarray:
        """Masked-LM logits [len(queries), vocab_size] (float32) at each query's mask, in the
        queries' order; a row of NaN for a query whose first copy does not fit (no candidates).
        Holds every row at once: for many queries use `candidates`, which keeps one batch's.
        `progress`: a tqdm bar over the batches."""
        queries = self._check(queries)
        out = np.full((len(queries), self.config.vocab_size), np.nan, np.float32)
        for rows, logits in self._batches(queries, progress):
            out[rows] = logits
        return out

    def candidates(self, queries: Iterable[MaskQuery], k: int, progress: bool = False) -> list[list[str]]:
        """Per query, in order: the words among the top `k` masked-LM predictions (descending
        logit, ties to the lower id), without "##" pieces and special tokens; so at most `k`
        words, and none for a query whose first copy does not fit. `progress`: a tqdm bar over
        the batches."""
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        queries = self._check(queries)
        out: list[list[str]] = [[] for _ in queries]
        known = len(self.vocab_tokens)
        for rows, logits in self._batches(queries, progress):
            for i, row in zip(rows, logits):
                out[i] = [self.vocab_tokens[t] for t in top_k(row, k)
                          if t < known and t not in self._special_ids and not self.vocab_tokens[t].startswith("##")]
        return out

    def _batches(self, queries: list[MaskQuery], progress: bool):
        """(query indices, their logits [n, V]) per batch: the queries that fit, sorted by input
        length (stable), `batch_size` at a time, each batch padded to its longest input rounded up
        to PAD_MULTIPLE (at most max_position_embeddings)."""
        from tqdm import tqdm

        inputs = {i: enc for i, q in enumerate(queries) if (enc := self.pair_input(q)) is not None}
        order = sorted(inputs, key=lambda i: (len(inputs[i][0]), i))
        batches = [order[s: s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        limit, pad = self.config.max_position_embeddings, self.tokenizer.pad_id
        for rows in tqdm(batches, desc="masked LM", unit="batch", disable=not progress):
            length = min(_round_up(max(len(inputs[i][0]) for i in rows), PAD_MULTIPLE), limit)
            ids = np.full((len(rows), length), pad, np.int32)
            types = np.zeros((len(rows), length), np.int32)
            mask = np.zeros((len(rows), length), np.int32)
            for r, i in enumerate(rows):
                tok, seg = inputs[i]
                ids[r, :len(tok)], types[r, :len(seg)], mask[r, :len(tok)] = tok, seg, 1
            taps = self.model.forward({"input_ids": ids, "token_type_ids": types, "attention_mask": mask})
            last = np.asarray(taps.hidden_states[-1], np.float32)
            at_mask = last[np.arange(len(rows)), [queries[i].position + 1 for i in rows]]
            yield rows, self.head.logits(at_mask)


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the `k` largest `logits` (1-d), descending, ties to the lower id: the first k of
    a stable sort of -logits in float64. Only values at or above the k-th largest are sorted."""
    neg = -np.asarray(logits, np.float64)
    k = min(k, neg.size)
    threshold = np.partition(neg, k - 1)[k - 1]
    ids = np.flatnonzero(neg <= threshold)  # every tie of the k-th value, ascending ids
    return ids[np.argsort(neg[ids], kind="stable")][:k]
