"""BERT as a MindSpore Cell whose parameter names are exactly the engine's canonical names, with every tap.

The Cell tree mirrors Hugging Face's module tree (embeddings / encoder.layer.N / pooler / classifier or
qa_outputs / fit_dense), so MindSpore's automatic name prefixing produces the canonical names without a renaming
table; `BertCell.__init__` checks that it does. Linear weights are stored [out, in] like the
canonical layout. Matrix products can run in float16 while parameters, LayerNorm, softmax and the
taps stay float32 (mixed precision for GPU/Ascend): `half` is a compile-time argument threaded
through `construct`, so one Cell serves a float32 evaluation graph and a float16 training graph.

With `kernels` (fused.FusedKernels, given on a CPU) the element-wise work runs through fused kernels:
the intermediate dense's bias + exact GELU, the attention softmax, and every residual add +
LayerNorm (the embeddings' sum of three tables included) are one kernel each way. The choice is
fixed per Cell at construction (compile-time constants in `construct`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from distill_engine.bert import BertConfig, parameter_shapes
from distill_engine.reference import MASK_VALUE
from distill_engine_mindspore import runtime
from distill_engine_mindspore.fused import FusedKernels, scalar


def _param(state: Mapping[str, np.ndarray], name: str, attr: str) -> Parameter:
    # The attribute name is the parameter's own name; parents prepend their attribute names.
    return Parameter(Tensor(np.ascontiguousarray(state[name], np.float32)), name=attr)


class Linear(nn.Cell):
    """y = x W^T + b over the last axis, W stored [out, in]."""

    def __init__(self, state: Mapping[str, np.ndarray], name: str):
        super().__init__()
        self.weight = _param(state, name + ".weight", "weight")
        self.bias = _param(state, name + ".bias", "bias")
        self.out_features = int(state[name + ".weight"].shape[0])
        self.matmul = ops.MatMul(transpose_b=True)

    def product(self, x, half=False):
        """x W^T without the bias, flattened to [rows, out] (for a kernel that adds the bias itself)."""
        flat = x.reshape(-1, x.shape[-1])
        if half:
            return ops.cast(self.matmul(ops.cast(flat, ms.float16), ops.cast(self.weight, ms.float16)), ms.float32)
        return self.matmul(flat, self.weight)

    def construct(self, x, half=False):
        shape = x.shape
        y = self.product(x, half) + self.bias
        return y.reshape(shape[:-1] + (self.out_features,))


class LayerNorm(nn.Cell):
    """LayerNorm(x + residual) over the last axis with canonical `weight`/`bias` names (nn.LayerNorm
    says gamma/beta). With fused kernels the sum and the normalisation are one kernel each way."""

    def __init__(self, state: Mapping[str, np.ndarray], name: str, eps: float, kernels: FusedKernels | None):
        super().__init__()
        self.weight = _param(state, name + ".weight", "weight")
        self.bias = _param(state, name + ".bias", "bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=float(eps))
        self.fused = kernels is not None
        if self.fused:
            self.add_norm = kernels.add_layer_norm
            self.eps = scalar(eps)

    def construct(self, x, residual):
        if self.fused:
            return self.add_norm(x, residual, self.weight, self.bias, self.eps)
        return self.norm(x + residual, self.weight, self.bias)[0]


class Table(nn.Cell):
    """An embedding table `weight` [rows, width]."""

    def __init__(self, state: Mapping[str, np.ndarray], name: str):
        super().__init__()
        self.weight = _param(state, name + ".weight", "weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class Dropout(nn.Cell):
    """Dropout active only in training mode; `reseed` gives each site a reproducible stream.

    MindSpore's stateful Dropout kernel draws a fresh mask on every call from the seeds it was
    built with, so a phase's seed is applied by rebuilding the primitive before compilation.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.dropout = ops.Dropout(keep_prob=1.0 - self.p) if self.p > 0 else None

    def reseed(self, seed0: int, seed1: int) -> None:
        if self.p > 0:
            self.dropout = ops.Dropout(keep_prob=1.0 - self.p, Seed0=seed0, Seed1=seed1)

    def construct(self, x):
        if not self.training or self.p == 0.0:
            return x
        return self.dropout(x)[0]


class Embeddings(nn.Cell):
    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], kernels: FusedKernels | None):
        super().__init__()
        self.word_embeddings = Table(state, "embeddings.word_embeddings")
        self.position_embeddings = Table(state, "embeddings.position_embeddings")
        # compile-time constants: DistilBERT has no token types; RoBERTa counts positions after padding
        self.has_types = bool(c.type_vocab_size)
        self.after_padding = c.position_ids == "after_padding"
        self.pad = int(c.pad_token_id)
        if self.has_types:
            self.token_type_embeddings = Table(state, "embeddings.token_type_embeddings")
        self.LayerNorm = LayerNorm(state, "embeddings.LayerNorm", c.layer_norm_eps, kernels)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def construct(self, input_ids, token_type_ids):
        length = input_ids.shape[1]
        if self.after_padding:  # reference.position_ids
            real = ops.cast(input_ids != self.pad, ms.int32)
            positions = self.position_embeddings(ops.cumsum(real, 1) * real + self.pad)
        else:
            positions = self.position_embeddings.weight[:length]
        if self.has_types:
            return self.dropout(self.LayerNorm(self.word_embeddings(input_ids) + positions,
                                               self.token_type_embeddings(token_type_ids)))
        words = self.word_embeddings(input_ids)  # (the fused kernel's two inputs have one shape)
        return self.dropout(self.LayerNorm(words, ops.broadcast_to(positions, words.shape)))


class SelfAttention(nn.Cell):
    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], prefix: str):
        super().__init__()
        self.query = Linear(state, prefix + "query")
        self.key = Linear(state, prefix + "key")
        self.value = Linear(state, prefix + "value")


class DenseNorm(nn.Cell):
    """dense -> dropout -> + residual -> LayerNorm (BERT's attention output and layer output)."""

    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], prefix: str, kernels: FusedKernels | None):
        super().__init__()
        self.dense = Linear(state, prefix + "dense")
        self.LayerNorm = LayerNorm(state, prefix + "LayerNorm", c.layer_norm_eps, kernels)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def construct(self, x, residual, half=False):
        return self.LayerNorm(self.dropout(self.dense(x, half)), residual)


class Attention(nn.Cell):
    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], prefix: str, kernels: FusedKernels | None):
        super().__init__()
        self.self = SelfAttention(c, state, prefix + "self.")
        self.output = DenseNorm(c, state, prefix + "output.", kernels)


class Intermediate(nn.Cell):
    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], prefix: str):
        super().__init__()
        self.dense = Linear(state, prefix + "dense")


def _activation(x, name: str):
    # ops.gelu's kernels are accurate to ~5e-7; a hand-written tanh GELU is not, because
    # MindSpore's CPU tanh is a fast approximation (errors ~1e-4).
    if name == "gelu":  # exact, erf-based, as the reference
        return ops.gelu(x, approximate="none")
    if name == "gelu_new":
        return ops.gelu(x, approximate="tanh")
    return ops.relu(x)


def _tanh(x):
    # runtime.WIDE on the (small) pooler input: float64 on a CPU, whose float32 tanh errs by up to
    # 1e-4; float32 on GPU and Ascend (no float64 kernels on Ascend's AI Core).
    return ops.cast(ops.tanh(ops.cast(x, runtime.WIDE)), ms.float32)


def _pooler_activation(x, name: str):
    """BertConfig.pooler_activation: tanh (BERT, RoBERTa), gelu (ELECTRA), relu (DistilBERT)."""
    return _tanh(x) if name == "tanh" else _activation(x, name)


class Layer(nn.Cell):
    """One encoder layer; returns (output, raw attention scores before softmax, value vectors
    [B, heads, L, head_dim])."""

    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], index: int, kernels: FusedKernels | None):
        super().__init__()
        prefix = f"encoder.layer.{index}."
        self.heads, self.head_dim = c.num_attention_heads, c.head_dim
        self.scale = 1.0 / math.sqrt(c.head_dim)
        self.act = c.hidden_act
        self.attention = Attention(c, state, prefix + "attention.", kernels)
        self.intermediate = Intermediate(c, state, prefix + "intermediate.")
        self.output = DenseNorm(c, state, prefix + "output.", kernels)
        self.attn_dropout = Dropout(c.attention_probs_dropout_prob)
        self.qk = ops.BatchMatMul(transpose_b=True)
        self.pv = ops.BatchMatMul()
        self.fused = kernels is not None
        self.fused_gelu = self.fused and c.hidden_act == "gelu"
        if self.fused:
            self.softmax = kernels.softmax
            self.bias_gelu = kernels.bias_gelu

    def _softmax(self, scores):
        return self.softmax(scores) if self.fused else ops.softmax(scores, -1)

    def _feed_forward_in(self, x, half):
        dense = self.intermediate.dense
        if self.fused_gelu:  # bias and exact GELU in one kernel
            b, length = x.shape[0], x.shape[1]
            return self.bias_gelu(dense.product(x, half), dense.bias).reshape(b, length, dense.out_features)
        return _activation(dense(x, half), self.act)

    def _heads(self, t, b, length):
        return t.reshape(b, length, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x, additive_mask, half=False):
        b, length = x.shape[0], x.shape[1]
        sa = self.attention.self
        # Three products rather than one over concatenated weights: on CPU the split of the fused
        # result costs more than it saves. The scale goes on q, the smaller tensor.
        q = self._heads(sa.query(x, half), b, length) * self.scale
        k = self._heads(sa.key(x, half), b, length)
        v = self._heads(sa.value(x, half), b, length)
        if half:
            scores = ops.cast(self.qk(ops.cast(q, ms.float16), ops.cast(k, ms.float16)), ms.float32) + additive_mask
            probs = self.attn_dropout(self._softmax(scores))
            ctx = ops.cast(self.pv(ops.cast(probs, ms.float16), ops.cast(v, ms.float16)), ms.float32)
        else:
            scores = self.qk(q, k) + additive_mask
            probs = self.attn_dropout(self._softmax(scores))
            ctx = self.pv(probs, v)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, length, self.heads * self.head_dim)
        x = self.attention.output(ctx, x, half)
        x = self.output(self._feed_forward_in(x, half), x, half)
        return x, scores, v


class Encoder(nn.Cell):
    def __init__(self, c: BertConfig, state: Mapping[str, np.ndarray], kernels: FusedKernels | None):
        super().__init__()
        self.layer = nn.CellList([Layer(c, state, i, kernels) for i in range(c.num_hidden_layers)])


class Pooler(nn.Cell):
    def __init__(self, state: Mapping[str, np.ndarray]):
        super().__init__()
        self.dense = Linear(state, "pooler.dense")


class PaperProjection(nn.Cell):
    """The paper's projections (projection "paper"): W_e for the embedding output (entry 0) and one
    W_h for every layer output, named fit_dense.embeddings.* and fit_dense.layers.*."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        super().__init__()
        self.embeddings = Linear(state, "fit_dense.embeddings")
        self.layers = Linear(state, "fit_dense.layers")


class BertCell(nn.Cell):
    """BERT encoder + pooler (+ its head, + TinyBERT projections) under canonical names.

    `construct(input_ids, token_type_ids, attention_mask)` returns
    (hidden_states: tuple of L+1, attention_scores: tuple of L, pooled, logits, value vectors: tuple
    of L [B, heads, L, head_dim]; computed for the attention anyway, so returning them is free). The
    logits are those of `config.head` (`distill_engine.graph.taps.HEAD_LOGITS`: [B, C] pooled,
    [B, L, C] token, [B, L, 2] span); a model without a head returns zeros [B, 1]. With
    `need_logits=False` (a compile-time constant) the pooler and head are skipped and pooled/logits
    are returned as zeros of shape [B, 1]: GD and TD1 do not need them.
    """

    def __init__(self, config: BertConfig, state: Mapping[str, np.ndarray], kernels: FusedKernels | None = None):
        super().__init__()
        self.config = config
        self.kernels = kernels
        self.has_head = bool(config.num_labels)
        self.relu_head = config.classifier_activation == "relu"
        # compile-time constants: which head reads the final hidden states at every position
        self.token_head = self.has_head and config.head == "token"
        self.span_head = self.has_head and config.head == "span"
        self.projection = config.projection
        self.embeddings = Embeddings(config, state, kernels)
        self.projects_embeddings = config.projects_embeddings
        self.pooler_activation = config.pooler_activation
        if self.projects_embeddings:  # ELECTRA's embedding_size -> hidden_size
            self.embeddings_project = Linear(state, "embeddings_project")
        self.encoder = Encoder(config, state, kernels)
        self.pooler = Pooler(state)
        if self.span_head:
            self.qa_outputs = Linear(state, "qa_outputs")
        elif config.num_labels:  # the pooled and token heads
            self.classifier = Linear(state, "classifier")
        if config.projection == "shared":
            self.fit_dense = Linear(state, "fit_dense")
        elif config.projection == "paper":
            self.fit_dense = PaperProjection(state)
        elif config.projection == "per_entry":
            self.fit_dense = nn.CellList([Linear(state, f"fit_dense.{i}")
                                          for i in range(config.num_hidden_layers + 1)])
        names = [p.name for p in self.get_parameters()]
        expected = list(parameter_shapes(config))
        if sorted(names) != sorted(expected):  # a programming error here, never a user error
            raise RuntimeError(f"parameter names drifted from the canonical ones: {sorted(set(names) ^ set(expected))}")

    @property
    def dynamic_shapes(self) -> bool:
        """Whether a graph of this Cell may be compiled for dynamic shapes (runtime.Graph): not with
        the fused kernels, whose AOT ops infer output shapes in Python."""
        return self.kernels is None

    def dropout_cells(self) -> list[Dropout]:
        return [c for _, c in self.cells_and_names() if isinstance(c, Dropout)]

    def project(self, hidden, entry: int, half=False):
        """The student's projection of hidden-state entry `entry` (identity without projection)."""
        if self.projection == "shared":
            return self.fit_dense(hidden, half)
        if self.projection == "paper":
            if entry == 0:  # a compile-time constant: the loss's pairs
                return self.fit_dense.embeddings(hidden, half)
            return self.fit_dense.layers(hidden, half)
        if self.projection == "per_entry":
            return self.fit_dense[entry](hidden, half)
        return hidden

    def taps(self, input_ids, token_type_ids, attention_mask, need_logits=True, half=False):
        additive = (1.0 - ops.cast(attention_mask, ms.float32)).reshape(attention_mask.shape[0], 1, 1, -1) * MASK_VALUE
        x = self.embeddings(input_ids, token_type_ids)
        if self.projects_embeddings:
            x = self.embeddings_project(x, half)
        hidden = (x,)
        scores = ()
        values = ()
        for layer in self.encoder.layer:
            x, s, v = layer(x, additive, half)
            hidden = hidden + (x,)
            scores = scores + (s,)
            values = values + (v,)
        if need_logits:
            pooled = _pooler_activation(self.pooler.dense(x[:, 0], half), self.pooler_activation)
            if self.span_head:
                logits = self.qa_outputs(x, half)
            elif self.token_head:
                logits = self.classifier(x, half)
            elif self.has_head:
                head_in = ops.relu(pooled) if self.relu_head else pooled
                logits = self.classifier(head_in, half)
            else:
                logits = ops.zeros((x.shape[0], 1), ms.float32)
        else:
            pooled = ops.zeros((x.shape[0], 1), ms.float32)
            logits = pooled
        return hidden, scores, pooled, logits, values

    def construct(self, input_ids, token_type_ids, attention_mask):
        return self.taps(input_ids, token_type_ids, attention_mask, True)
