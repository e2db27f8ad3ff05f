"""The training step: objective, backward, clipping, AdamW (or BertAdam), loss scaling, exact resume.

`TorchTrainer` runs the objective of a `DistillGraph` (each term through its kind's torch
implementation, `distill_engine_torch.losses`) on a `backend.TorchModel` student, with the
teacher's outputs from its model (under no_grad) or from the batch (the teacher-output cache).

Resume (`TorchTrainer.state` / `load_state`) is exact, dropout included: the state holds AdamW's
moments and step, the schedule position, the GradScaler's scale and growth tracker, and torch's
CPU generator (and the student's CUDA device's) as uint8 arrays, restored after the constructor's
`torch.manual_seed`. A run saved on one GPU and resumed on another (cuda:1, then cuda:0) carries
its CUDA generator over: a generator's state is a seed and an offset, not tied to its device.

On a GPU a step makes the host wait for the device once: the loss values come back in one copy
(`_read`), and the gradient scaler's skip flag rides along instead of two `get_scale()` reads.
(fp16's GradScaler.step reads its own inf flag to decide whether to step: torch's rule.)
Per-parameter clipping runs as multi-tensor kernels (`optim.clip_each_`) with clip_grad_norm_'s numbers.

Precision (`TrainSpec.precision`): "bf16" and "fp16" run the teacher's and the student's forwards
under `torch.autocast` (bfloat16 / float16 matrix products; torch keeps LayerNorm, softmax and the
other precision-sensitive ops in float32), then cast every tap to float32 before the loss terms,
so the MSEs and softmaxes sum in float32. "fp16" adds `torch.amp.GradScaler` (dynamic loss
scaling). The parameters, their gradients and AdamW's moments stay float32 (autocast casts copies
of the weights per op).

Data parallel (`TrainSpec.world_size` > 1; the process group: `backend.TorchBackend.process_group`):
the student's module is wrapped in DistributedDataParallel (the frozen teacher never is: it has
no gradients to synchronise), whose all-reduce averages the gradients during backward; clipping
and AdamW then see the same averaged gradients on every rank. The parameters the objective does
not reach (`graph.dependencies.used_parameters`: the pooler and classifier in GD/TD1, ...) are
frozen, as DDP requires every trainable parameter to receive a gradient; AdamW skips them alike in
one process. Each rank seeds its dropout from (seed, rank); rank 0 keeps the seed of a single
process. A resumed rank > 0 re-seeds from (seed, rank, step) instead of restoring rank 0's generator.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from distill_engine.backend import Batch, State, TrainSpec, parse_trainer_state, rng_key, trainer_state
from distill_engine.bert import is_no_decay
from distill_engine.distributed import LOSS_WEIGHT
from distill_engine.errors import BackendError, CheckpointError
from distill_engine.graph import DistillGraph, LossTerm, supplied_teacher_taps
from distill_engine.graph.dependencies import used_parameters
from distill_engine.losses import implementation
from distill_engine_torch.model import TorchBert
from distill_engine_torch.optim import clip_each_, kernel_for, make_optimizer
from distill_engine_torch.runtime import AUTOCAST_DTYPES

if TYPE_CHECKING:
    from distill_engine_torch.backend import TorchModel


def named_outputs(out, float32: bool = False) -> dict[str, torch.Tensor]:
    """A TorchBert forward's outputs by `Taps.named()` name ("embeddings", "hidden.j",
    "attention.i", "value.i", "logits"), in float32 when asked (after an autocast forward: the loss
    terms sum in float32)."""
    hidden, scores, _, logits, values = out
    as32 = (lambda t: t.float()) if float32 else (lambda t: t)  # noqa: E731
    named = {"embeddings": as32(hidden[0])}
    named.update({f"hidden.{j}": as32(h) for j, h in enumerate(hidden) if j})
    named.update({f"attention.{i}": as32(a) for i, a in enumerate(scores)})
    named.update({f"value.{i}": as32(v) for i, v in enumerate(values)})
    if logits is not None:
        named["logits"] = as32(logits)
    return named


def term_value(term: LossTerm, impl, student: TorchBert, s_named: dict, t_named: dict | None,
               labels: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    """One unweighted term through its kind's implementation (distill_engine.losses.definition):
    the mapped taps, the student's through its projection where the kind says so; `mask` (float
    [B, L], for a graph with mask_padding) restricts position losses to real tokens."""
    d = term.definition
    s_in = tuple(s_named[n] for n in term.student_taps)
    if d.projected:
        s_in = tuple(student.project(h, s) for h, (s, _) in zip(s_in, term.pairs))
    t_in = tuple(t_named[n] for n in term.teacher_taps) if d.needs_teacher else ()
    return impl(s_in, t_in, mask, labels, term.params)


class TorchTrainer:
    """AdamW (no decay on bias/LayerNorm; `BertAdam` without bias correction), the core's per-step
    learning rates, clipping, and the objective of a `DistillGraph`. The teacher runs under no_grad:
    no graph is recorded for it. With `TrainSpec.freeze_pad_embedding` the student's word
    embeddings look up through F.embedding's padding_idx: the pad row's gradient is exactly zero."""

    def __init__(self, student: TorchModel, teacher: TorchModel | None, spec: TrainSpec):
        self.student, self.teacher, self.spec = student, teacher, spec
        self.graph: DistillGraph = spec.graph
        # each term's implementation on this backend (plan() checked that every kind has one)
        self.impls = [implementation(t.kind, "torch") for t in self.graph.terms]
        self.step_index = 0
        opt = spec.optimizer
        named = list(student.module.named_parameters())
        groups = [
            {"params": [p for n, p in named if not is_no_decay(n)], "weight_decay": opt.weight_decay},
            {"params": [p for n, p in named if is_no_decay(n)], "weight_decay": 0.0},
        ]
        self.params = [p for _, p in named]
        # AdamW, or the original's BertAdam (no bias correction: OptimizerSpec.bias_correction), fused
        # where the device has the kernel (optim.py: the update is memory-bound)
        self.kernel = kernel_for(student.torch_device)
        self.optimizer = make_optimizer(groups, lr=float(spec.learning_rates[0]) if len(spec.learning_rates) else 0.0,
                                        betas=tuple(opt.betas), eps=opt.eps, bias_correction=opt.bias_correction,
                                        kernel=self.kernel)
        student.module.freeze_pad_row(spec.freeze_pad_embedding)
        self.generator_seed = rank_seed(spec.seed, spec.rank)
        torch.manual_seed(self.generator_seed)
        self.forward_module = student.module
        if spec.world_size > 1:
            self.forward_module = self._data_parallel()
        # Only the logits need the pooler/classifier; GD/TD1 skip them (a measurable saving).
        self.need_logits = self.graph.trains_logits
        self.autocast_dtype = AUTOCAST_DTYPES[spec.precision]
        if spec.initial_loss_scale is not None:
            # "fp16" always scales (TrainSpec.initial_loss_scale); a scale asked for in fp32/bf16 runs too.
            self.scaler = torch.amp.GradScaler(student.torch_device.type, init_scale=spec.initial_loss_scale,
                                               growth_interval=spec.loss_scale_window)
        else:
            self.scaler = None
        self.skipped_steps = 0  # steps the GradScaler skipped (an overflow); torch does not count them

    def _data_parallel(self):
        from torch.nn.parallel import DistributedDataParallel

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise BackendError(f"TrainSpec.world_size is {self.spec.world_size} but no torch.distributed process "
                               "group is initialised (start the run with torchrun or distill-engine run --nproc)")
        used = used_parameters(self.student.config, self.graph)
        for name, p in self.student.module.named_parameters():
            p.requires_grad_(name in used)
        device = self.student.torch_device
        return DistributedDataParallel(self.student.module, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False)  # TorchBert has no buffers to keep in step

    def _objective(self, batch: Batch, train: bool, parallel: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.student.inputs(batch)
        labels = None
        if "labels" in batch and batch["labels"] is not None:
            labels = torch.as_tensor(np.asarray(batch["labels"]), device=self.student.torch_device)
        t_out = None
        supplied = self._supplied_teacher(batch) if self.graph.needs_teacher else None
        with self._autocast():
            if self.graph.needs_teacher and supplied is None:
                if self.teacher is None:
                    raise BackendError("this phase's losses need the teacher's outputs: the batch carries none "
                                       "(no teacher-output cache) and no teacher model was given")
                # no_grad, not inference_mode: the teacher's outputs are saved for the student's
                # backward (MSE targets), which inference tensors do not allow.
                with torch.no_grad():
                    t_out = self.teacher.module(*inputs, need_logits=self.need_logits)
            self.student.module.train(train)
            # the training step through DDP (its backward all-reduces); checks without it
            module = self.forward_module if parallel else self.student.module
            s_out = module(*inputs, need_logits=self.need_logits)
        # the loss terms (and the projection inside them) in float32: a bfloat16 MSE over a
        # [B, L, H] tap would round each partial sum to 8 bits
        half = self.autocast_dtype is not None
        s_named = named_outputs(s_out, float32=half)
        t_named = supplied if supplied is not None else (None if t_out is None else named_outputs(t_out, float32=half))
        mask = inputs[2].to(torch.float32) if self.graph.mask_padding else None
        terms = {t.name: term_value(t, impl, self.student.module, s_named, t_named, labels, mask)
                 for t, impl in zip(self.graph.terms, self.impls)}
        total = sum(t.weight * terms[t.name] for t in self.graph.terms)
        return total, terms

    def _supplied_teacher(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        """The teacher's outputs from the batch (the teacher-output cache) by tap name, as float32
        tensors on the student's device, or None."""
        supplied = supplied_teacher_taps(batch, self.graph.teacher_taps)
        if supplied is None:
            return None
        device = self.student.torch_device
        # copied as stored (float16 from the cache: half the bytes) and widened on the device, exactly
        return {name: torch.as_tensor(np.asarray(value), device=device).float() for name, value in supplied.items()}

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.student.torch_device.type, dtype=self.autocast_dtype)

    def step(self, batch: Batch) -> dict[str, float]:
        lr = float(self.spec.learning_rates[min(self.step_index, len(self.spec.learning_rates) - 1)])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, terms = self._objective(batch, train=True, parallel=True)
        # a rank's share of the global batch: its weight makes DDP's gradient mean the global mean
        weighted = total * float(batch[LOSS_WEIGHT]) if LOSS_WEIGHT in batch else total
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(weighted).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            weighted.backward()
        self._clip()
        skipped = None
        if self.scaler is not None:
            # the scale as a device tensor (GradScaler._scale, set by scale() above): get_scale()
            # is a host read, which waits for the device
            before = self.scaler._scale.clone()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # update() lowers the scale exactly when the step found an inf/nan and was skipped
            skipped = self.scaler._scale < before
        else:
            self.optimizer.step()
        self.step_index += 1
        out = self._read(terms, total, skipped)
        out["lr"] = lr
        return out

    def _read(self, terms: dict[str, torch.Tensor], total: torch.Tensor,
              skipped: torch.Tensor | None = None) -> dict[str, float]:
        """The step's loss values (and the scaler's skip flag) as floats, through one copy to the
        host: a float() per term would make the host wait on the device once per term."""
        values = [v.detach().float().reshape(()) for v in terms.values()] + [total.detach().float().reshape(())]
        if skipped is not None:
            values.append(skipped.float().reshape(()))
        host = torch.stack(values).cpu().tolist()
        if skipped is not None:
            self.skipped_steps += int(host.pop())
        out = dict(zip(terms, host[:-1]))
        out["total"] = host[-1]
        return out

    def _clip(self) -> None:
        opt = self.spec.optimizer
        if opt.clip == "global_norm":
            torch.nn.utils.clip_grad_norm_(self.params, opt.max_grad_norm)
        elif opt.clip == "per_parameter":
            clip_each_(self.params, opt.max_grad_norm, self.kernel)

    # -- state for exact resume ------------------------------------------------------------------
    def _rng_keys(self) -> dict[str, torch.device | None]:
        keys: dict[str, torch.device | None] = {rng_key("torch", "cpu"): None}
        device = self.student.torch_device
        if device.type == "cuda":
            keys[rng_key("torch", "cuda", device.index or 0)] = device
        return keys

    @staticmethod
    def _moved_cuda_generator(saved: dict, ours: dict) -> dict:
        """`saved` with a run's CUDA generator renamed to this trainer's CUDA device when the run
        moved (saved on cuda:1, resumed on cuda:0): a generator's state is its seed and offset, not
        tied to the device, and without it the resumed run's dropout would silently start afresh."""
        ours_cuda = [k for k in ours if k.startswith(rng_key("torch", "cuda"))]
        theirs = [k for k in saved if k.startswith(rng_key("torch", "cuda"))]
        if len(ours_cuda) != 1 or len(theirs) != 1 or theirs == ours_cuda:
            return dict(saved)
        moved = {k: v for k, v in saved.items() if k != theirs[0]}
        moved[ours_cuda[0]] = saved[theirs[0]]
        return moved

    def state(self) -> State:
        moments, steps = {}, set()
        for name, p in self.student.module.named_parameters():
            st = self.optimizer.state.get(p)
            if st:  # no entry until the parameter's first gradient
                moments[name] = (st["exp_avg"].detach().cpu().numpy(), st["exp_avg_sq"].detach().cpu().numpy())
                steps.add(int(st["step"]))
        if len(steps) > 1:
            raise BackendError(f"AdamW's step counts differ between parameters ({sorted(steps)}): "
                               "the neutral state holds one count")
        loss_scale = None
        if self.scaler is not None:
            scaler = self.scaler.state_dict()
            loss_scale = (float(scaler["scale"]), int(scaler["_growth_tracker"]), self.skipped_steps)
        rng = {key: (torch.get_rng_state() if device is None else torch.cuda.get_rng_state(device)).numpy()
               for key, device in self._rng_keys().items()}
        return trainer_state(schedule_step=self.step_index, adam_step=steps.pop() if steps else 0, moments=moments,
                             loss_scale=loss_scale, rng=rng)

    def load_state(self, state: State) -> None:
        named = dict(self.student.module.named_parameters())
        parsed = parse_trainer_state(state, backend="torch", loss_scaled=self.scaler is not None,
                                     parameters={n: tuple(p.shape) for n, p in named.items()})
        generators = []  # checked first: a state that fails to load leaves the trainer untouched
        # rank 0's generator is the one saved; another rank draws its own stream (module docstring)
        ours = self._rng_keys()
        saved = self._moved_cuda_generator(parsed.rng, ours) if self.spec.rank == 0 else {}
        for key, value in saved.items():
            if key not in ours:
                continue  # a CUDA generator saved by a CPU run, or a CPU run resuming a GPU one's
            if value.dtype != np.uint8 or value.ndim != 1:
                raise CheckpointError(f'trainer state "{key}": expected a 1-d uint8 array, got {value.dtype} {value.shape}')
            generators.append((key, ours[key], torch.from_numpy(value.copy())))
        for key, device, value in generators:
            try:
                if device is None:
                    torch.set_rng_state(value)
                else:
                    torch.cuda.set_rng_state(value, device)
            except RuntimeError as exc:
                raise CheckpointError(f'trainer state "{key}": not a torch generator state ({exc})') from None
        # Through load_state_dict, which puts each tensor on its parameter's device and dtype.
        index = {id(p): i for i, p in enumerate(p for g in self.optimizer.param_groups for p in g["params"])}
        saved = self.optimizer.state_dict()
        saved["state"] = {index[id(named[name])]: {"step": torch.tensor(float(parsed.adam_step), dtype=torch.float32),
                                                   "exp_avg": torch.from_numpy(m.copy()),
                                                   "exp_avg_sq": torch.from_numpy(v.copy())}
                          for name, (m, v) in parsed.moments.items()}
        self.optimizer.load_state_dict(saved)
        if self.scaler is not None:
            scale, good, self.skipped_steps = parsed.loss_scale
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": scale, "_growth_tracker": good})
        self.step_index = parsed.schedule_step
        if self.spec.rank > 0:
            torch.manual_seed(rank_seed(self.spec.seed, self.spec.rank, self.step_index))

    def losses(self, batch: Batch) -> dict[str, float]:
        with torch.no_grad():
            total, terms = self._objective(batch, train=False)
        return self._read(terms, total)

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """d(total)/d(parameter) without updating (no dropout), canonical names; for conformance."""
        self.optimizer.zero_grad(set_to_none=True)
        total, _ = self._objective(batch, train=False)
        total.backward()
        grads = {n: (p.grad.detach().cpu().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
                 for n, p in self.student.module.named_parameters()}
        self.optimizer.zero_grad(set_to_none=True)
        return grads


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The dropout seed of `rank` (rank 0 at step 0: the seed itself, as in one process)."""
    if rank == 0 and step == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1)[0])
