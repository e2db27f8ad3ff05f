"""Numpy reference: BERT forward with every tap, and every distillation loss. The oracle for backends.

Written for clarity, not speed, in float64 so that its own rounding is far below the tolerance a
float32 backend is held to. Formulas are those documented in `distill_engine.graph.losses`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.special import erf

from distill_engine.bert import BertConfig, head_prefix, projection_names
from distill_engine.graph import DistillGraph, LossTerm, Taps
from distill_engine.losses.builtin import ATTENTION_ZERO_BELOW, MASK_VALUE, log_softmax, softmax  # noqa: F401


def _linear(x: np.ndarray, params: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return x @ params[name + ".weight"].T + params[name + ".bias"]


def _layer_norm(x: np.ndarray, params: Mapping[str, np.ndarray], name: str, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * params[name + ".weight"] + params[name + ".bias"]


def activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "gelu":  # exact, erf-based: Hugging Face "gelu" and both TinyBERT codebases
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    if name == "gelu_new":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(f"unknown activation {name}")


def position_ids(config: BertConfig, ids: np.ndarray) -> np.ndarray:
    """[B, L] rows of the position table: 0.. (BERT), or RoBERTa's padding_idx + 1 onwards counted
    over the non-[PAD] tokens, [PAD] itself at padding_idx (fairseq's make_positions)."""
    if config.position_ids == "absolute":
        return np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    real = (ids != config.pad_token_id).astype(np.int64)
    return np.cumsum(real, axis=1) * real + config.pad_token_id


def pooler_activation(x: np.ndarray, name: str) -> np.ndarray:
    """The sequence head's first activation (`BertConfig.pooler_activation`)."""
    return np.tanh(x) if name == "tanh" else activation(x, name)


def forward(config: BertConfig, params: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> Taps:
    """Inference forward (no dropout) of a BERT with its taps; `batch` holds input_ids,
    token_type_ids and attention_mask, each [B, L]."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    ids = np.asarray(batch["input_ids"])
    types = np.asarray(batch["token_type_ids"])
    mask = np.asarray(batch["attention_mask"], np.float64)
    b, length = ids.shape
    eps = config.layer_norm_eps
    x = (p["embeddings.word_embeddings.weight"][ids]
         + p["embeddings.position_embeddings.weight"][position_ids(config, ids)])
    if config.type_vocab_size:
        x = x + p["embeddings.token_type_embeddings.weight"][types]
    x = _layer_norm(x, p, "embeddings.LayerNorm", eps)
    if config.projects_embeddings:
        x = _linear(x, p, "embeddings_project")
    hidden, scores_out, values = [x], [], []
    heads, dh = config.num_attention_heads, config.head_dim
    additive = (1.0 - mask)[:, None, None, :] * MASK_VALUE

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, length, heads, dh).transpose(0, 2, 1, 3)

    for layer in range(config.num_hidden_layers):
        pre = f"encoder.layer.{layer}."
        q = split(_linear(x, p, pre + "attention.self.query"))
        k = split(_linear(x, p, pre + "attention.self.key"))
        v = split(_linear(x, p, pre + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + additive
        scores_out.append(scores)
        values.append(v)
        ctx = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, length, heads * dh)
        x = _layer_norm(_linear(ctx, p, pre + "attention.output.dense") + x, p, pre + "attention.output.LayerNorm", eps)
        inter = activation(_linear(x, p, pre + "intermediate.dense"), config.hidden_act)
        x = _layer_norm(_linear(inter, p, pre + "output.dense") + x, p, pre + "output.LayerNorm", eps)
        hidden.append(x)
    pooled = pooler_activation(_linear(x[:, 0], p, "pooler.dense"), config.pooler_activation)
    return Taps(hidden_states=tuple(hidden), attention_scores=tuple(scores_out), pooled=pooled,
                logits=head(config, p, x, pooled), values=tuple(values))


def head(config: BertConfig, params: Mapping[str, np.ndarray], last_hidden: np.ndarray,
         pooled: np.ndarray) -> np.ndarray | None:
    """The logits of the model's head (`BertConfig.head`; shapes: `graph.taps.HEAD_LOGITS`) from the
    final hidden states [B, L, H] and the pooled vector [B, H]; None without a head. The pooled
    head reads only the pooled vector; the token and span heads only the final hidden states,
    each position's logits from that position's state alone."""
    if not config.num_labels:
        return None
    p = {k: np.asarray(params[k], np.float64) for k in (head_prefix(config) + ".weight", head_prefix(config) + ".bias")}
    if config.head == "pooled":
        pooled = np.asarray(pooled, np.float64)
        return _linear(np.maximum(pooled, 0.0) if config.classifier_activation == "relu" else pooled, p, "classifier")
    return _linear(np.asarray(last_hidden, np.float64), p, head_prefix(config))


def project(config: BertConfig, params: Mapping[str, np.ndarray], hidden: np.ndarray, entry: int) -> np.ndarray:
    """The student's projection of hidden-state entry `entry` to the teacher's width."""
    if config.projection == "none":
        return hidden
    w, b = projection_names(config, entry)
    return hidden @ np.asarray(params[w], np.float64).T + np.asarray(params[b], np.float64)


def term_inputs(term: LossTerm, student_config: BertConfig, student_params: Mapping[str, np.ndarray],
                student: Taps, teacher: Taps | None) -> tuple[tuple, tuple]:
    """(student tensors, teacher tensors) of one term, as its implementation receives them
    (distill_engine.losses.definition): the mapped taps, the student's projected when the loss
    says so."""
    d = term.definition
    s_named = student.named()
    s_in = tuple(s_named[n] for n in term.student_taps)
    if d.projected:
        s_in = tuple(project(student_config, student_params, h, s) for h, (s, _) in zip(s_in, term.pairs))
    t_in = ()
    if d.needs_teacher:
        t_named = teacher.named()
        t_in = tuple(t_named[n] for n in term.teacher_taps)
    return s_in, t_in


def loss_term(term: LossTerm, student_config: BertConfig, student_params: Mapping[str, np.ndarray],
              student: Taps, teacher: Taps | None, labels: np.ndarray | None,
              mask: np.ndarray | None = None) -> float:
    """The unweighted value of one loss term, by its kind's numpy reference; with `mask` (the
    batch's attention mask, for a graph with mask_padding) position losses average over real
    positions only."""
    s_in, t_in = term_inputs(term, student_config, student_params, student, teacher)
    m = None if mask is None else np.asarray(mask, np.float64)
    return float(term.definition.reference(s_in, t_in, m, labels, term.params))


def losses(graph: DistillGraph, student_config: BertConfig, student_params: Mapping[str, np.ndarray],
           teacher_config: BertConfig | None, teacher_params: Mapping[str, np.ndarray] | None,
           batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Every term of `graph` on one batch, keyed by `LossTerm.name`, plus "total" (the weighted sum);
    each model's taps from its family's numpy forward (BERT's is `forward` above)."""
    from distill_engine.models.registry import family_of

    student = family_of(student_config).reference_forward(student_config, student_params, batch)
    teacher = (family_of(teacher_config).reference_forward(teacher_config, teacher_params, batch)
               if graph.needs_teacher else None)
    mask = batch["attention_mask"] if graph.mask_padding else None
    out = {t.name: loss_term(t, student_config, student_params, student, teacher, batch.get("labels"), mask)
           for t in graph.terms}
    out["total"] = float(sum(t.weight * out[t.name] for t in graph.terms))
    return out


def clip_gradients(grads: Mapping[str, np.ndarray], mode: str, max_norm: float) -> dict[str, np.ndarray]:
    """Gradient clipping as OptimizerSpec documents it: one norm over all ("global_norm"), each
    tensor on its own ("per_parameter"), or none. Scale = max_norm / max(norm, max_norm)."""
    g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
    if mode == "none":
        return g
    if mode == "global_norm":
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        scale = max_norm / max(norm, max_norm)
        return {k: v * scale for k, v in g.items()}
    return {k: v * (max_norm / max(float(np.sqrt(np.sum(v * v))), max_norm)) for k, v in g.items()}


def adamw_step(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], state: dict, lr: float,
               spec, no_decay) -> dict[str, np.ndarray]:
    """One AdamW update with decoupled weight decay: p <- p * (1 - lr*wd) - lr * m_hat / (sqrt(v_hat) + eps),
    wd = 0 where `no_decay(name)`. With `spec.bias_correction` (torch.optim.AdamW) m_hat = m / (1 - b1^t)
    and v_hat = v / (1 - b2^t); without (the original TinyBERT's BertAdam) m_hat = m, v_hat = v.
    `state` carries "step", "m", "v" between calls (start with {})."""
    b1, b2 = spec.betas
    step = state.get("step", 0) + 1
    state["step"] = step
    m, v = state.setdefault("m", {}), state.setdefault("v", {})
    out = {}
    for name, p in params.items():
        p = np.asarray(p, np.float64)
        g = np.asarray(grads[name], np.float64)
        m[name] = b1 * m.get(name, 0.0) + (1 - b1) * g
        v[name] = b2 * v.get(name, 0.0) + (1 - b2) * g * g
        m_hat = m[name] / (1 - b1**step) if spec.bias_correction else m[name]
        v_hat = v[name] / (1 - b2**step) if spec.bias_correction else v[name]
        wd = 0.0 if no_decay(name) else spec.weight_decay
        out[name] = p * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + spec.eps)
    return out


def numerical_gradient(fn, params: Mapping[str, np.ndarray], name: str, index: tuple, eps: float = 1e-4) -> float:
    """Central finite difference of scalar fn(params) in one coordinate (float64)."""
    plus = {k: np.array(v, np.float64) for k, v in params.items()}
    minus = {k: np.array(v, np.float64) for k, v in params.items()}
    plus[name][index] += eps
    minus[name][index] -= eps
    return (fn(plus) - fn(minus)) / (2 * eps)
