"""The compiled training step: objective, backward, clipping, AdamW with PyTorch's semantics, loss scaling.

One call of the step is one MindSpore graph (mindspore.jit of `TrainStep`): student forward with
dropout, every loss term, backward, gradient unscaling and overflow check, clipping, and the AdamW
update written with ops and applied in place. The frozen teacher runs in its own inference graph
(no dropout, no gradient) and hands its taps to the step as inputs.

The optimiser is written here rather than taken from MindSpore: `nn.AdamWeightDecay` has no bias
correction, and `mint.optim.AdamW` bakes the learning rate into the graph as a constant. The update
is torch.optim.AdamW's single-tensor CPU path, operation for operation:

    p *= 1 - lr*wd                      (decay group only: not biases/LayerNorm, see is_no_decay)
    m  = m + (1 - b1) (g - m)
    v  = v b2 + (1 - b2) g g
    p += -(lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

Without loss scaling (every float32 run, so every CPU run) the update is MindSpore's fused
`ops.AdamWeightDecay` kernel, one pass over each tensor instead of about fifteen element-wise ops
and three copies (on the CPU the written-out update took 0.47 s of a 3.1 s TD1 step). That kernel
computes p -= lr' (m / (sqrt(v) + eps') + wd' p) with no bias correction; with

    eps' = eps sqrt(1-b2^t),   lr' = (lr / (1-b1^t)) sqrt(1-b2^t),   wd' = lr wd / lr'

it is the update above exactly (multiply the fraction by sqrt(1-b2^t)/sqrt(1-b2^t); the decay term
lr' wd' p = lr wd p), up to float32 rounding. With loss scaling the written-out update stays: an
overflowed step must keep every old value, which a fused in-place kernel cannot do.

Without bias correction (`OptimizerSpec.bias_correction` false, the original's BertAdam) the host
sets 1 - b1^t and 1 - b2^t to 1 in these scalars: STEP_SIZE = FUSED_LR = lr, BC2_SQRT = 1,
FUSED_EPS = eps, FUSED_WD = wd, and both updates above become p -= lr (m / (sqrt(v) + eps) + wd p).

The pad row (`TrainSpec.freeze_pad_embedding`): right after the backward (and the all-reduce), the
word embeddings' gradient is multiplied by a [vocab, 1] mask that is 0 at `pad_token_id`, in the
step and in `gradients` alike, so clipping, the overflow check and Adam see the row's gradient as
exactly zero, as torch's padding_idx gives it. (On the trainer's own cells rather than a flag on
the shared student Cell: a flag there would be read when a graph compiles, not when it is built.)

The scalars (lr of step s, lr/(1-b1^t), sqrt(1-b2^t), 1-lr*wd, the loss scale, the fused kernel's
lr', eps', wd') are computed on the host in float64, as PyTorch does, and enter the graph as one
float32 tensor: the compiled step reads step s's rate without recompiling. Only the parameters the objective reaches are updated (see
`distill_engine.graph.dependencies`), as PyTorch skips parameters whose gradient is None.

Dynamic loss scaling follows DynamicLossScaleUpdateCell: the loss is multiplied by the scale, the
gradients divided by it; if any gradient is not finite the update is skipped (parameters and
moments keep their values, Adam's t does not advance) and the scale halves (not below 1);
after `loss_scale_window` good steps in a row it doubles. The scale lives on the host, which reads
the overflow flag the step returns anyway. The flag is `mindspore.amp.all_finite` of the unscaled
gradients: on Ascend chips that saturate instead of overflowing to inf it reads the float-status
registers, where `ops.isfinite` would never fire and the scale would keep doubling.

Resume (`MindSporeTrainer.state` / `load_state`, neutral names of `distill_engine.backend`): Adam's
moments (`TrainStep.exp_avg` / `exp_avg_sq`, written back with `Parameter.set_data` before the step
graph compiles), Adam's t, the schedule position and the loss-scale state are restored exactly, so
without dropout a resumed run is bit-identical to an uninterrupted one. The dropout RNG is not
restored: each site's `ops.Dropout(keep_prob, Seed0, Seed1)` keeps its generator inside the CPU
kernel, where no API reads or sets it (MindSpore 2.10), and the dropouts that take a seed and offset
from a `mindspore.Generator` (`mint.nn.functional.dropout`, `mint.bernoulli`, `mint.rand_like`)
have no CPU kernels ("The kernel DropoutExt unregistered", "Create kernelmod for op InplaceUniform
failed"). Instead `load_state` re-seeds every dropout site from (TrainSpec.seed, the saved
schedule position) before the first compile (`dropout_seed`): a resumed run draws masks
reproducibly (the same checkpoint resumed twice gives the same run) and does not replay step 0's
masks, but they are not the masks the uninterrupted run would have drawn, so with dropout on the
resumed run is a statistically equivalent, not an identical, continuation.

Data parallel (`TrainSpec.world_size` > 1, under msrun: `MindSporeBackend.process_group` set the
DATA_PARALLEL context): the step's gradients pass through `nn.DistributedGradReducer` (an
AllReduce in the compiled graph, mean over the ranks) before unscaling, the overflow check and
clipping, so every rank applies the same update. The rank's `distributed.LOSS_WEIGHT` multiplies
the differentiated loss through the SCALE entry of the hyper-parameter tensor (INV_SCALE keeps
1/loss scale), so it costs no recompilation. Each rank seeds its dropout sites from (seed, rank).
"""

from __future__ import annotations

import math
import os

import mindspore as ms
import numpy as np
from mindspore import ParameterTuple, Tensor, amp, nn, ops

from distill_engine.backend import Batch, State, TrainSpec, parse_trainer_state, trainer_state
from distill_engine.bert import is_no_decay
from distill_engine.distributed import LOSS_WEIGHT
from distill_engine.errors import BackendError, CheckpointError
from distill_engine.graph import DistillGraph, split_teacher_taps, supplied_teacher_taps
from distill_engine.graph.dependencies import used_parameters
from distill_engine.losses import implementation
from distill_engine.losses.builtin import ATTENTION_ZERO_BELOW
from distill_engine_mindspore import fused, losses, runtime

# DISTILL_ENGINE_MS_TEACHER_CHUNK=N runs the frozen teacher's forward N sequences at a time (see
# MindSporeModel.taps_tensors): the teacher's share of resident memory drops by batch/N (TD1 with the
# MiniLM teacher, batch 32 x 128, N = 8: peak 5.4 GB instead of 7.4 GB), but the step got about 20 %
# slower here (4.4 s against 3.65 s), so it is off unless asked for: for teachers that do not fit.
TEACHER_CHUNK_ENV = "DISTILL_ENGINE_MS_TEACHER_CHUNK"


def teacher_chunk() -> int | None:
    """The chunk size DISTILL_ENGINE_MS_TEACHER_CHUNK asks for, or None (whole batches)."""
    raw = os.environ.get(TEACHER_CHUNK_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BackendError(f"{TEACHER_CHUNK_ENV}={raw!r}: expected a positive number of sequences")
    return int(raw)

def dropout_seed(seed: int, step_index: int, rank: int = 0) -> int:
    """Seed0 of every dropout site of a trainer that starts at `step_index` (Seed1 is the site's
    number): the phase's seed for a fresh trainer; for one resumed mid-phase, a seed derived from
    (seed, step_index), so that it does not repeat the masks of the phase's first steps; another
    rank of a data-parallel run adds its rank."""
    if step_index == 0 and rank == 0:
        return int(seed) % (2**31 - 1) + 1
    entropy = [int(seed), int(step_index)] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) % (2**31 - 1) + 1


# Why "bf16" is not served (MindSporeBackend.precisions): measured on MindSpore 2.10's CPU kernels,
# MatMul and BatchMatMul refuse bfloat16 inputs in graph and PyNative mode alike ("Select CPU
# operator[MatMul] fail! Unsupported data type!"; Softmax and Sqrt too), and MindSpore's own
# bfloat16 support list names only Ascend kernels, where this backend's bfloat16 graph is untested.
BF16_ABSENT = "MindSpore 2.10's CPU MatMul has no bfloat16 kernel; its documented bfloat16 kernels are Ascend's"


# Layout of the hyper-parameter tensor the step reads.
LR, STEP_SIZE, BC2_SQRT, DECAY_MUL, SCALE, INV_SCALE, FUSED_LR, FUSED_EPS, FUSED_WD = range(9)


def _gather(reads: str, indices, hidden, scores, values, logits):
    """The tensors a term compares on one side (a compile-time choice): hidden-state entries,
    attention scores or value vectors at `indices`, or the logits."""
    if reads == "logits":
        return (logits,)
    # Each entry is indexed inside its branch, never through a local bound to one of the tuples
    # (`taps = scores if ... else values if ... else hidden; taps[i]`). This function is traced
    # twice in one graph, on the student's plain tuples and on the teacher's mutable ones; when the
    # two have the same shapes (a student of the teacher's size), MindSpore 2.10 mixed up the two
    # specialisations of a tuple chosen by a condition and the compiled graph bound its inputs to
    # the wrong tensors: "Not same shape in device address" at the first read of an output (a
    # phase reading the teacher's logits and value vectors: a value tensor copied into the logits
    # input). Indexing in the branch gives the same tensors and compiles correctly.
    out = ()
    for i in indices:
        if reads == "attention":
            out = out + (scores[i],)
        elif reads == "values":
            out = out + (values[i],)
        else:
            out = out + (hidden[i],)
    return out


class Objective(nn.Cell):
    """total = sum(weight * term) of a DistillGraph on the student's taps and the teacher's.

    Each term runs its kind's registered implementation for "mindspore"
    (`distill_engine.losses.implementation`), called as `impl(student, teacher, mask, labels, params)`
    on the tensors its pairs and its definition's `reads` select (the student's through its
    projection where the kind is `projected`). The built-in MSE kinds (`losses.FUSABLE`) get a sixth
    argument: the student's fused MSE kernel and its thresholds, or None when it has no fused kernels.

    Returns (total * scale, total, per-term values in the graph's term order); only the first output
    is differentiated.
    """

    def __init__(self, student_cell, graph: DistillGraph, *, need_logits: bool, half: bool):
        super().__init__(auto_prefix=False)  # keep the student's canonical parameter names
        self.cell = student_cell
        impls = [implementation(t.kind, "mindspore") for t in graph.terms]
        self.fns = tuple(impls)
        # per term, compile-time constants: (reads, student indices, teacher indices, params,
        # projected, needs_teacher, takes the fused kernel)
        kernels = student_cell.kernels
        self.specs = tuple(
            (t.definition.reads, tuple(int(s) for s, _ in t.pairs), tuple(int(u) for _, u in t.pairs), tuple(t.params),
             bool(t.definition.projected), bool(t.definition.needs_teacher),
             any(impl is f for f in losses.FUSABLE))
            for t, impl in zip(graph.terms, impls))
        self.weights = tuple(float(t.weight) for t in graph.terms)
        self.need_logits = need_logits
        self.half = half
        self.mask_padding = graph.mask_padding
        self.fused = None if kernels is None else (kernels.mse, fused.scalar(ATTENTION_ZERO_BELOW),
                                                   fused.scalar(fused.NO_THRESHOLD))

    def construct(self, input_ids, token_type_ids, attention_mask, labels, t_hidden, t_scores, t_logits, t_values,
                  scale):
        s_hidden, s_scores, _, s_logits, s_values = self.cell.taps(input_ids, token_type_ids, attention_mask,
                                                                   self.need_logits, self.half)
        values = ()
        total = 0.0
        mask = ops.cast(attention_mask, ms.float32) if self.mask_padding else None
        for i in range(len(self.specs)):
            reads, s_index, t_index, params, projected, needs_teacher, use_fused = self.specs[i]
            s_in = _gather(reads, s_index, s_hidden, s_scores, s_values, s_logits)
            if projected:
                projections = ()
                for j in range(len(s_in)):
                    projections = projections + (self.cell.project(s_in[j], s_index[j], self.half),)
                s_in = projections
            t_in = _gather(reads, t_index, t_hidden, t_scores, t_values, t_logits) if needs_teacher else ()
            fn = self.fns[i]
            if use_fused:
                value = fn(s_in, t_in, mask, labels, params, self.fused)
            else:
                value = fn(s_in, t_in, mask, labels, params)
            values = values + (value,)
            total = total + self.weights[i] * value
        return total * scale, total, values


_adamw = ops.MultitypeFuncGraph("distill_adamw")


@_adamw.register("Tensor", "Number", "Number", "Number", "Bool", "Bool", "Tensor",
                 "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_update(hp, beta1, beta2, eps, decay, masked, overflow, param, m, v, grad):
    """torch.optim.AdamW on one tensor; with `masked`, an overflow keeps every old value."""
    p = param * hp[DECAY_MUL] if decay else param
    m_new = m + (1.0 - beta1) * (grad - m)
    v_new = v * beta2 + (1.0 - beta2) * grad * grad
    denom = ops.sqrt(v_new) / hp[BC2_SQRT] + eps
    p_new = p - hp[STEP_SIZE] * m_new / denom
    if masked:
        p_new = ops.select(overflow, param, p_new)
        m_new = ops.select(overflow, m, m_new)
        v_new = ops.select(overflow, v, v_new)
    ops.assign(m, m_new)
    ops.assign(v, v_new)
    ops.assign(param, p_new)
    return True


_fused_adamw = ops.MultitypeFuncGraph("distill_fused_adamw")


@_fused_adamw.register("Function", "Tensor", "Tensor", "Tensor", "Bool", "Tensor", "Tensor", "Tensor", "Tensor")
def _fused_adamw_update(kernel, hp, beta1, beta2, decay, param, m, v, grad):
    """The same update through the fused kernel (see the module docstring for lr', eps', wd')."""
    wd = hp[FUSED_WD] if decay else ops.zeros((), ms.float32)
    kernel(param, m, v, hp[FUSED_LR], beta1, beta2, hp[FUSED_EPS], wd, grad)
    return True


_scale = ops.MultitypeFuncGraph("distill_scale")


@_scale.register("Tensor", "Tensor")
def _scale_grad(factor, grad):
    return grad * factor


_square_sum = ops.MultitypeFuncGraph("distill_square_sum")


@_square_sum.register("Tensor")
def _tensor_square_sum(grad):
    return (grad * grad).sum()


_clip_one = ops.MultitypeFuncGraph("distill_clip_one")


@_clip_one.register("Number", "Tensor")
def _clip_tensor(max_norm, grad):
    # The same rule as clip_by_global_norm, per tensor: scale = max_norm / max(norm, max_norm).
    # (torch's clip_grad_norm_ divides by norm + 1e-6: a 1e-6 relative difference when clipping.)
    norm = ops.sqrt((grad * grad).sum())
    return grad * (max_norm / ops.maximum(norm, max_norm))


WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


class PadRowMask:
    """Where the word embeddings sit among a cell's `weights`, and the [vocab, 1] float32 mask (0 at
    the pad row) their gradient is multiplied by; index -1 when nothing is frozen."""

    def __init__(self, weights, pad_token_id: int, freeze: bool):
        names = [p.name for p in weights]
        self.index = names.index(WORD_EMBEDDINGS) if freeze and WORD_EMBEDDINGS in names else -1
        mask = None
        if self.index >= 0:
            mask = np.ones((weights[self.index].shape[0], 1), np.float32)
            mask[pad_token_id] = 0.0
        self.mask = Tensor(mask) if mask is not None else Tensor(np.ones((1, 1), np.float32))


def _freeze_pad_row(grads, index, mask):
    """`grads` with the word embeddings' (at `index`, a compile-time constant; -1: none) masked."""
    if index < 0:
        return grads
    return grads[:index] + (grads[index] * mask,) + grads[index + 1:]


class TrainStep(nn.Cell):
    """One optimiser step; returns (total, per-term values, overflow flag)."""

    def __init__(self, objective: Objective, decay_params: list, plain_params: list, spec: TrainSpec,
                 pad_token_id: int = 0):
        super().__init__(auto_prefix=False)
        opt = spec.optimizer
        self.objective = objective
        self.n_decay = len(decay_params)
        self.n_plain = len(plain_params)
        self.weights = ParameterTuple(decay_params + plain_params)
        pad = PadRowMask(self.weights, pad_token_id, spec.freeze_pad_embedding)
        self.pad_index, self.pad_mask = pad.index, pad.mask
        self.decay_flags = (True,) * len(decay_params) + (False,) * len(plain_params)
        # Adam's moments, one pair per parameter, named after it.
        self.exp_avg = self.weights.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.weights.clone(prefix="exp_avg_sq", init="zeros")
        self.beta1, self.beta2 = float(opt.betas[0]), float(opt.betas[1])
        self.eps = float(opt.eps)
        self.clip = opt.clip
        self.max_norm = float(opt.max_grad_norm)
        self.scaled = spec.initial_loss_scale is not None
        self.fused = ops.AdamWeightDecay()
        self.beta1_t = Tensor(self.beta1, ms.float32)
        self.beta2_t = Tensor(self.beta2, ms.float32)
        self.grad_fn = ms.value_and_grad(self.objective, None, self.weights, has_aux=True)
        self.hyper_map = ops.HyperMap()
        # data parallel: the gradient all-reduce (mean over the ranks) inside this graph
        self.parallel = spec.world_size > 1
        self.reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=spec.world_size) if self.parallel else None

    def construct(self, input_ids, token_type_ids, attention_mask, labels, t_hidden, t_scores, t_logits, t_values, hp):
        (_, total, values), grads = self.grad_fn(input_ids, token_type_ids, attention_mask, labels,
                                                 t_hidden, t_scores, t_logits, t_values, hp[SCALE])
        if self.parallel:
            grads = self.reducer(grads)
        grads = _freeze_pad_row(grads, self.pad_index, self.pad_mask)
        overflow = ops.zeros((), ms.bool_)
        if self.scaled:
            grads = self.hyper_map(ops.partial(_scale, hp[INV_SCALE]), grads)
            # mindspore.amp.all_finite, not ops.isfinite: Atlas training chips (910A, and 910B in
            # saturation mode) saturate at float16's largest value instead of producing inf, which
            # only the chip's float-status registers (read by all_finite) see
            overflow = ops.logical_not(amp.all_finite(grads))
        if self.clip == "global_norm":
            # ops.clip_by_global_norm's rule (scale = max / max(norm, max)), written out because that
            # function is deprecated in MindSpore 2.10.
            norm = ops.sqrt(ops.addn(self.hyper_map(_square_sum, grads)))
            grads = self.hyper_map(ops.partial(_scale, self.max_norm / ops.maximum(norm, self.max_norm)), grads)
        elif self.clip == "per_parameter":
            grads = self.hyper_map(ops.partial(_clip_one, self.max_norm), grads)
        n = self.n_decay
        # Both groups' results feed the output: a graph drops side effects nothing depends on.
        done = ()
        if not self.scaled:
            done = self.hyper_map(ops.partial(_fused_adamw, self.fused, hp, self.beta1_t, self.beta2_t),
                                  self.decay_flags, self.weights, self.exp_avg, self.exp_avg_sq, grads)
            return ops.depend(total, done), values, overflow
        if n:
            done = done + self.hyper_map(ops.partial(_adamw, hp, self.beta1, self.beta2, self.eps, True, self.scaled,
                                                     overflow),
                                         self.weights[:n], self.exp_avg[:n], self.exp_avg_sq[:n], grads[:n])
        if self.n_plain:
            done = done + self.hyper_map(ops.partial(_adamw, hp, self.beta1, self.beta2, self.eps, False, self.scaled,
                                                     overflow),
                                         self.weights[n:], self.exp_avg[n:], self.exp_avg_sq[n:], grads[n:])
        return ops.depend(total, done), values, overflow


class GradientsOf(nn.Cell):
    """d(total)/d(every student parameter), for conformance checks (no update)."""

    def __init__(self, objective: Objective, params: list, spec: TrainSpec, pad_token_id: int = 0):
        super().__init__(auto_prefix=False)
        self.objective = objective
        self.weights = ParameterTuple(params)
        self.grad_fn = ms.value_and_grad(self.objective, None, self.weights, has_aux=True)
        pad = PadRowMask(self.weights, pad_token_id, spec.freeze_pad_embedding)
        self.pad_index, self.pad_mask = pad.index, pad.mask

    def construct(self, input_ids, token_type_ids, attention_mask, labels, t_hidden, t_scores, t_logits, t_values,
                  scale):
        _, grads = self.grad_fn(input_ids, token_type_ids, attention_mask, labels, t_hidden, t_scores, t_logits,
                                t_values, scale)
        return _freeze_pad_row(grads, self.pad_index, self.pad_mask)


class MindSporeTrainer:
    """The engine's `Trainer` protocol: a compiled step over `spec.graph` that updates the student in place."""

    def __init__(self, student, teacher, spec: TrainSpec):
        # teacher None: every batch must carry the teacher's outputs (the teacher-output cache)
        self.student, self.teacher, self.spec = student, teacher, spec
        self.graph: DistillGraph = spec.graph
        self.names = tuple(t.name for t in self.graph.terms)  # the results' keys, in term order
        self.need_logits = self.graph.trains_logits
        self.teacher_logits = any(t.definition.reads == "logits" and t.definition.needs_teacher
                                  for t in self.graph.terms)
        # precision "fp16": float16 matrix products under dynamic loss scaling (TrainSpec.initial_loss_scale).
        # The backend serves it on GPU/Ascend only (MindSporeBackend.precisions: the CPU's float16
        # kernels are slow); a trainer built directly runs the same graph on a CPU, which the tests use.
        if spec.precision not in ("fp32", "fp16"):
            raise BackendError(f'precision "{spec.precision}": the MindSpore backend trains in "fp32" or "fp16" '
                               f"({BF16_ABSENT})")
        self.half = spec.precision == "fp16"
        self.scaled_loss = spec.initial_loss_scale is not None
        self.loss_scale = spec.initial_loss_scale if self.scaled_loss else 1.0
        self.teacher_chunk = teacher_chunk()
        self.good_steps = 0
        self.skipped_steps = 0
        self.step_index = 0  # position in the learning-rate schedule: advances on every call
        self.adam_t = 0  # Adam's step count: advances only on applied updates
        cell = student.cell
        self._seed_dropout(0)
        self._stepped = False

        used = used_parameters(student.config, self.graph)
        params = [p for p in cell.get_parameters() if p.name in used]
        self.updated_names = [p.name for p in params]
        decay = [p for p in params if not is_no_decay(p.name)]
        plain = [p for p in params if is_no_decay(p.name)]
        self._train_objective = Objective(cell, self.graph, need_logits=self.need_logits, half=self.half)
        self._eval_objective = Objective(cell, self.graph, need_logits=self.need_logits, half=False)
        self._step_cell = TrainStep(self._train_objective, decay, plain, spec, student.config.pad_token_id)
        self._step = runtime.Graph(self._step_cell, cell.dynamic_shapes)
        self._eval = runtime.Graph(self._eval_objective, cell.dynamic_shapes)
        self._grads_cell = None

    def _seed_dropout(self, step_index: int) -> None:
        # Takes effect at the step graph's compilation (its first call): the primitives are rebuilt.
        for site, dropout in enumerate(self.student.cell.dropout_cells()):
            dropout.reseed(dropout_seed(self.spec.seed, step_index, self.spec.rank), site + 1)

    # -- inputs --------------------------------------------------------------------------------
    def _inputs(self, batch: Batch):
        ids, types, mask = self.student.tensors(batch)
        labels = batch.get("labels")
        if labels is None:
            labels_t = Tensor(np.zeros(ids.shape[0], np.int32))
        elif np.issubdtype(np.asarray(labels).dtype, np.floating):  # regression scores (STS-B)
            labels_t = Tensor(np.asarray(labels, np.float32))
        else:  # class ids
            labels_t = Tensor(np.asarray(labels).astype(np.int32))
        supplied = supplied_teacher_taps(batch, self.graph.teacher_taps) if self.graph.needs_teacher else None
        if supplied is not None:
            t_hidden, t_scores, t_logits, t_values = self._supplied(supplied, ids.shape[0])
        elif self.graph.needs_teacher:
            if self.teacher is None:
                raise BackendError("this phase's losses need the teacher's outputs: the batch carries none "
                                   "(no teacher-output cache) and no teacher model was given")
            t_hidden, t_scores, _, t_logits, t_values = self.teacher.taps_tensors(
                ids, types, mask, need_logits=self.teacher_logits, chunk=self.teacher_chunk,
                need_values=self.graph.needs_values)
        else:
            t_hidden, t_scores, t_values, t_logits = (), (), (), Tensor(np.zeros((ids.shape[0], 1), np.float32))
        # A tuple of tensors is a compile-time constant unless marked mutable (recompiles per call).
        t_hidden, t_scores, t_values = (ms.mutable(tuple(t)) if len(t) else () for t in (t_hidden, t_scores, t_values))
        return ids, types, mask, labels_t, t_hidden, t_scores, t_logits, t_values

    @staticmethod
    def _supplied(supplied: dict, rows: int):
        """Precomputed teacher outputs (the teacher-output cache) as the tuples the compiled
        objective indexes: hidden[t], scores[t], values[t]. An entry the objective does not read holds a
        1-element placeholder (a tuple of tensors cannot have holes)."""
        hidden, scores, logits, values = split_teacher_taps(supplied)
        placeholder = np.zeros((1,), np.float32)

        def as_tuple(entries):
            size = max(entries, default=-1) + 1
            return tuple(Tensor(np.asarray(entries.get(i, placeholder), np.float32)) for i in range(size))

        return (as_tuple(hidden), as_tuple(scores),
                Tensor(np.asarray(logits, np.float32)) if logits is not None else Tensor(np.zeros((rows, 1), np.float32)),
                as_tuple(values))

    def _hyper(self, lr: float, weight: float = 1.0) -> Tensor:
        opt = self.spec.optimizer
        t = self.adam_t + 1
        b1, b2 = float(opt.betas[0]), float(opt.betas[1])
        # 1 - b^t, or 1 without bias correction (BertAdam; module docstring)
        bc1, bc2 = (1.0 - b1**t, 1.0 - b2**t) if opt.bias_correction else (1.0, 1.0)
        hp = np.zeros(9, np.float64)
        hp[LR] = lr
        hp[STEP_SIZE] = lr / bc1
        hp[BC2_SQRT] = math.sqrt(bc2)
        hp[DECAY_MUL] = 1.0 - lr * float(opt.weight_decay)
        hp[SCALE] = self.loss_scale * weight  # the rank's loss weight rides on the differentiated scale
        hp[INV_SCALE] = 1.0 / self.loss_scale
        hp[FUSED_LR] = hp[STEP_SIZE] * hp[BC2_SQRT]
        hp[FUSED_EPS] = float(opt.eps) * hp[BC2_SQRT]
        # lr = 0 (the end of a linear decay): no step and no decay; wd' would be 0/0.
        hp[FUSED_WD] = lr * float(opt.weight_decay) / hp[FUSED_LR] if hp[FUSED_LR] > 0 else 0.0
        return Tensor(hp.astype(np.float32))

    def current_lr(self) -> float:
        rates = self.spec.learning_rates
        if len(rates) == 0:
            return 0.0
        return float(rates[min(self.step_index, len(rates) - 1)])

    # -- protocol ------------------------------------------------------------------------------
    def step(self, batch: Batch) -> dict[str, float]:
        lr = self.current_lr()
        inputs = self._inputs(batch)
        self._stepped = True
        self._step_cell.set_train(True)
        weight = float(batch[LOSS_WEIGHT]) if LOSS_WEIGHT in batch else 1.0
        total, values, overflow = self._step(*inputs, self._hyper(lr, weight))
        self.step_index += 1
        if self.scaled_loss:
            self._update_scale(bool(overflow.asnumpy()))
        else:
            self.adam_t += 1
        out = {k: float(v.asnumpy()) for k, v in zip(self.names, values)}
        out["total"] = float(total.asnumpy())
        out["lr"] = lr
        return out

    def _update_scale(self, overflow: bool) -> None:
        if overflow:
            self.skipped_steps += 1
            self.loss_scale = max(self.loss_scale / 2.0, 1.0)
            self.good_steps = 0
            return
        self.adam_t += 1
        self.good_steps += 1
        if self.good_steps >= self.spec.loss_scale_window:
            self.loss_scale *= 2.0
            self.good_steps = 0

    def _moments(self):
        cell = self._step_cell
        return zip(cell.weights, cell.exp_avg, cell.exp_avg_sq)

    def state(self) -> State:
        """The neutral trainer state (see `distill_engine.backend.Trainer.state`). No "rng.*" entry:
        the dropout kernels' generators cannot be read (module docstring)."""
        # zero moments before the first update are "no state yet", as in torch
        moments = {p.name: (m.asnumpy(), v.asnumpy()) for p, m, v in self._moments()} if self.adam_t else {}
        loss_scale = (self.loss_scale, self.good_steps, self.skipped_steps) if self.scaled_loss else None
        return trainer_state(schedule_step=self.step_index, adam_step=self.adam_t, moments=moments,
                             loss_scale=loss_scale)

    def load_state(self, state: State) -> None:
        """Continue from `state`: exact except for dropout, whose sites are re-seeded from
        (TrainSpec.seed, the saved schedule position) (module docstring). Before the first step only:
        the dropout seeds are compiled into the step graph."""
        if self._stepped:
            raise BackendError("load_state must be called on a fresh trainer, before its first step")
        parsed = parse_trainer_state(state, backend="mindspore", loss_scaled=self.scaled_loss,
                                     parameters={p.name: tuple(p.shape) for p in self._step_cell.weights})
        if parsed.adam_step:
            missing = [p.name for p in self._step_cell.weights if p.name not in parsed.moments]
            if missing:
                raise CheckpointError(f'trainer state has no Adam moments for "{missing[0]}" (updated by this trainer) '
                                      f"after {parsed.adam_step} update(s)"
                                      + (f", nor for {len(missing) - 1} more" if len(missing) > 1 else ""))
        for p, m, v in self._moments():
            if p.name in parsed.moments:
                saved_m, saved_v = parsed.moments[p.name]
                m.set_data(Tensor(np.array(saved_m, np.float32)))
                v.set_data(Tensor(np.array(saved_v, np.float32)))
        self.step_index, self.adam_t = parsed.schedule_step, parsed.adam_step
        if parsed.loss_scale is not None:
            self.loss_scale, self.good_steps, self.skipped_steps = parsed.loss_scale
        self._seed_dropout(self.step_index)

    def losses(self, batch: Batch) -> dict[str, float]:
        inputs = self._inputs(batch)
        self._eval_objective.set_train(False)
        _, total, values = self._eval(*inputs, Tensor(np.float32(1.0)))
        out = {k: float(v.asnumpy()) for k, v in zip(self.names, values)}
        out["total"] = float(total.asnumpy())
        return out

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """d(total)/d(parameter) for every student parameter, without updating and without dropout
        (zeros for parameters the objective does not reach), canonical names; for conformance."""
        if self._grads_cell is None:
            params = list(self.student.cell.get_parameters())
            self._grads_cell = GradientsOf(self._eval_objective, params, self.spec, self.student.config.pad_token_id)
            self._grads = runtime.Graph(self._grads_cell, self.student.cell.dynamic_shapes)
        inputs = self._inputs(batch)
        self._grads_cell.set_train(False)
        grads = self._grads(*inputs, Tensor(np.float32(1.0)))
        return {p.name: g.asnumpy().astype(np.float32) for p, g in zip(self._grads_cell.weights, grads)}
