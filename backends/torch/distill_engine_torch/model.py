"""BERT in PyTorch whose `state_dict()` keys are the engine's canonical names, with every tap."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distill_engine.bert import BertConfig, head_prefix, projection_prefix
from distill_engine.reference import MASK_VALUE


def _activation(name: str):
    return {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}[name]


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        e = c.embedding_width
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab_size, e)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, e)
        if c.type_vocab_size:  # DistilBERT has none
            self.token_type_embeddings = nn.Embedding(c.type_vocab_size, e)
        self.LayerNorm = nn.LayerNorm(e, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        # the word-embedding row whose gradient is zero (nn.Embedding's padding_idx), or None:
        # set by the trainer (TrainSpec.freeze_pad_embedding), read at every forward
        self.frozen_row: int | None = None

    def forward(self, input_ids, token_type_ids):
        c = self.config
        if c.position_ids == "after_padding":  # RoBERTa: reference.position_ids
            real = (input_ids != c.pad_token_id).to(torch.int64)
            positions = torch.cumsum(real, dim=1) * real + c.pad_token_id
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = F.embedding(input_ids, self.word_embeddings.weight, padding_idx=self.frozen_row) + \
            self.position_embeddings(positions)
        if c.type_vocab_size:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)


class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads, self.head_dim = c.num_attention_heads, c.head_dim
        self.scale = 1.0 / math.sqrt(c.head_dim)
        self.act = _activation(c.hidden_act)
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c)
        self.attn_dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def forward(self, x, additive_mask):
        b, length, _ = x.shape
        sa = self.attention.self
        # One fused matmul for Q, K and V: the three weights concatenated (a view-free cat per call
        # is cheaper than three small GEMMs on CPU).
        qkv = F.linear(x, torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]),
                       torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
        q, k, v = qkv.view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q * self.scale, k.transpose(-1, -2)) + additive_mask
        ctx = torch.matmul(self.attn_dropout(torch.softmax(scores, dim=-1)), v)
        ctx = ctx.transpose(1, 2).reshape(b, length, self.heads * self.head_dim)
        x = self.attention.output(ctx, x)
        x = self.output(self.act(self.intermediate.dense(x)), x)
        return x, scores, v


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class TorchBert(nn.Module):
    """BERT encoder + pooler (+ its head, + TinyBERT projections), canonical parameter names.

    `forward` returns (hidden_states list of L+1, attention scores list of L, pooled, logits|None,
    value vectors list of L [B, heads, L, head_dim]); the logits are those of `config.head`
    (`distill_engine.graph.taps.HEAD_LOGITS`: [B, C] pooled, [B, L, C] token, [B, L, 2] span).
    `with_taps=False` skips nothing but keeps the lists empty of references for a lighter graph.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        if config.projects_embeddings:  # ELECTRA's embedding_size -> hidden_size
            self.embeddings_project = nn.Linear(config.embedding_width, config.hidden_size)
        act = config.pooler_activation
        self.pooler_act = torch.tanh if act == "tanh" else _activation(act)
        self.encoder = _Encoder(config)
        self.pooler = _Pooler(config)
        if config.num_labels:  # bert.head_prefix: "classifier" (pooled and token heads), "qa_outputs" (span)
            setattr(self, head_prefix(config), nn.Linear(config.hidden_size, config.num_labels))
        # the module tree gives bert.projection_names' canonical names
        linear = lambda: nn.Linear(config.hidden_size, config.projection_dim)  # noqa: E731
        if config.projection == "shared":
            self.fit_dense = linear()
        elif config.projection == "paper":
            self.fit_dense = nn.ModuleDict({"embeddings": linear(), "layers": linear()})
        elif config.projection == "per_entry":
            self.fit_dense = nn.ModuleList(linear() for _ in range(config.num_hidden_layers + 1))

    def project(self, hidden: torch.Tensor, entry: int) -> torch.Tensor:
        if self.config.projection == "none":
            return hidden
        return self.get_submodule(projection_prefix(self.config, entry))(hidden)

    def freeze_pad_row(self, freeze: bool) -> None:
        """Give the word embeddings' `pad_token_id` row no gradient (True) or a normal one (False)."""
        self.embeddings.frozen_row = self.config.pad_token_id if freeze else None

    def forward(self, input_ids, token_type_ids, attention_mask, *, need_logits: bool = True):
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE
        x = self.embeddings(input_ids, token_type_ids)
        if self.config.projects_embeddings:
            x = self.embeddings_project(x)
        hidden, scores, values = [x], [], []
        for layer in self.encoder.layer:
            x, s, v = layer(x, additive)
            hidden.append(x)
            scores.append(s)
            values.append(v)
        pooled = logits = None
        if need_logits:
            pooled = self.pooler_act(self.pooler.dense(x[:, 0]))
            if self.config.num_labels and self.config.head == "pooled":
                head_in = F.relu(pooled) if self.config.classifier_activation == "relu" else pooled
                logits = self.classifier(head_in)
            elif self.config.num_labels:  # token and span heads: every position's final hidden state
                logits = self.get_submodule(head_prefix(self.config))(x)
        return hidden, scores, pooled, logits, values
