"""The yardstick: the TinyBERT distillation loop a user would write by hand in plain PyTorch.

Written without distill_engine_torch on purpose; it imports torch only. The model is a minimal BERT
in the Hugging Face layout (so a Hugging Face / canonical state dict loads into it as is: separate
query/key/value Linears, scores divided by sqrt(d_head), exact GELU), the TinyBERT projection
`fit_dense` and the `classifier(relu(pooled))` head of TinyBERT's sequence classifier. The loop:

- teacher in eval mode, frozen, run under torch.no_grad();
- student in train mode (dropout 0.1);
- losses: attention MSE on raw scores with where(x <= -100, 0, x), embedding and hidden-state MSE
  through fit_dense, soft cross-entropy mean(-softmax(z_T/T) * log_softmax(z_S/T)); fine-tuning
  (TinyBERT's step 2, no teacher): cross-entropy on the labels;
- AdamW(lr, betas (0.9, 0.999), eps 1e-6), weight decay 0.01 except biases and LayerNorm;
- per-tensor gradient-norm clipping at 1.0 (TinyBERT's PyTorch original), then the update.

`config` is any object with BERT's config attributes (e.g. distill_engine.bert.BertConfig or a
SimpleNamespace): vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
intermediate_size, max_position_embeddings, type_vocab_size, layer_norm_eps, hidden_dropout_prob,
attention_probs_dropout_prob, num_labels, projection_dim (0: no fit_dense).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def forward(self, x, additive_mask):
        b, n, _ = x.shape

        def split(t):
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + additive_mask
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return context.transpose(1, 2).reshape(b, n, -1), scores


class DenseResidualNorm(nn.Module):
    def __init__(self, d_in, c):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseResidualNorm(c.hidden_size, c)


class Intermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseResidualNorm(c.intermediate_size, c)

    def forward(self, x, additive_mask):
        context, scores = self.attention.self(x, additive_mask)
        x = self.attention.output(context, x)
        x = self.output(F.gelu(self.intermediate.dense(x)), x)
        return x, scores


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class TinyBert(nn.Module):
    """BERT + pooler (+ classifier) (+ fit_dense). Returns (hidden states, attention scores, logits)."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.pooler = Pooler(c)
        if c.num_labels:
            self.classifier = nn.Linear(c.hidden_size, c.num_labels)
        if getattr(c, "projection_dim", 0):
            self.fit_dense = nn.Linear(c.hidden_size, c.projection_dim)

    def forward(self, input_ids, token_type_ids, attention_mask, need_logits=True):
        additive_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        x = self.embeddings(input_ids, token_type_ids)
        hidden, scores = [x], []
        for layer in self.encoder.layer:
            x, s = layer(x, additive_mask)
            hidden.append(x)
            scores.append(s)
        logits = None
        if need_logits:
            pooled = torch.tanh(self.pooler.dense(x[:, 0]))
            logits = self.classifier(torch.relu(pooled))
        return hidden, scores, logits


def load(config, state: dict[str, np.ndarray]) -> TinyBert:
    """A TinyBert holding `state` (Hugging Face / canonical parameter names)."""
    model = TinyBert(config)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()})
    return model


def to_tensors(batch: dict[str, np.ndarray]):
    return tuple(torch.from_numpy(np.asarray(batch[k])).long() for k in ("input_ids", "token_type_ids", "attention_mask"))


def attention_mse(s_scores, t_scores, layer_map):
    loss = 0.0
    for j, t in enumerate(layer_map):  # student layer j (0-based) <- teacher layer t (1-based)
        s, tt = s_scores[j], t_scores[t - 1]
        loss = loss + F.mse_loss(torch.where(s <= -100, torch.zeros_like(s), s),
                                 torch.where(tt <= -100, torch.zeros_like(tt), tt))
    return loss


def soft_cross_entropy(s_logits, t_logits, temperature=1.0):
    return (-F.softmax(t_logits / temperature, dim=-1) * F.log_softmax(s_logits / temperature, dim=-1)).mean()


class HandwrittenTrainer:
    """One TinyBERT phase by hand. `phase` "intermediate" (GD, TD1: attention + embedding + hidden
    MSE), "prediction" (TD2: soft cross-entropy) or "finetune" (the teacher's own fine-tuning:
    cross-entropy on the labels, `teacher` None); `layer_map[j]` is the 1-based teacher layer of
    student layer j+1."""

    def __init__(self, student: TinyBert, teacher: TinyBert | None, phase: str, layer_map=(), *, lr=5e-5,
                 weight_decay=0.01, max_grad_norm=1.0, temperature=1.0, seed=0):
        self.student, self.teacher, self.phase = student, teacher, phase
        self.layer_map = tuple(layer_map)
        self.max_grad_norm, self.temperature = max_grad_norm, temperature
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        torch.manual_seed(seed)
        named = list(student.named_parameters())
        no_decay = [p for n, p in named if n.endswith(".bias") or "LayerNorm" in n]
        decay = [p for n, p in named if not (n.endswith(".bias") or "LayerNorm" in n)]
        self.params = [p for _, p in named]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=lr, betas=(0.9, 0.999), eps=1e-6)

    def objective(self, batch, train=True):
        ids, types, mask = to_tensors(batch)
        if self.phase == "finetune":
            self.student.train(train)
            loss = F.cross_entropy(self.student(ids, types, mask)[2], torch.from_numpy(np.asarray(batch["labels"])).long())
            return loss, {"hard_cross_entropy": loss}
        need_logits = self.phase == "prediction"
        with torch.no_grad():
            t_hidden, t_scores, t_logits = self.teacher(ids, types, mask, need_logits)
        self.student.train(train)
        s_hidden, s_scores, s_logits = self.student(ids, types, mask, need_logits)
        if need_logits:
            terms = {"soft_cross_entropy": soft_cross_entropy(s_logits, t_logits, self.temperature)}
        else:
            fit = self.student.fit_dense
            terms = {
                "attention_mse": attention_mse(s_scores, t_scores, self.layer_map),
                "embedding_mse": F.mse_loss(fit(s_hidden[0]), t_hidden[0]),
                "hidden_mse": sum(F.mse_loss(fit(s_hidden[j]), t_hidden[t])
                                  for j, t in enumerate(self.layer_map, start=1)),
            }
        return sum(terms.values()), terms

    def step(self, batch) -> float:
        loss, _ = self.objective(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.params:
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, self.max_grad_norm)
        self.optimizer.step()
        return loss.item()

    def losses(self, batch) -> dict[str, float]:
        with torch.no_grad():
            total, terms = self.objective(batch, train=False)
        return {**{k: float(v) for k, v in terms.items()}, "total": float(total)}


def predict(model: TinyBert, batch) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return model(*to_tensors(batch))[2].numpy()
