"""The PyTorch backend: models, loss terms and the training step behind the engine's protocol."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from distill_engine.backend import Batch, State, TrainSpec, check_device_in
from distill_engine.bert import BertConfig, is_no_decay
from distill_engine.device import Device
from distill_engine.graph import DistillGraph, LossTerm, Taps
from distill_engine.reference import ATTENTION_ZERO_BELOW
from distill_engine_torch import __version__
from distill_engine_torch.model import TorchBert


def _to_torch_device(device: Device) -> torch.device:
    return torch.device("cpu") if device.kind == "cpu" else torch.device("cuda", device.index)


class TorchModel:
    """A TorchBert on a device, seen through the engine's `Model` protocol."""

    def __init__(self, config: BertConfig, state: State, device: Device):
        self.config = config
        self.device = device
        self.torch_device = _to_torch_device(device)
        self.module = TorchBert(config)
        self.module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()},
                                    strict=True)
        self.module.to(self.torch_device)
        self.module.eval()

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def t(name):
            return torch.as_tensor(np.asarray(batch[name], np.int64), device=self.torch_device)

        return t("input_ids"), t("token_type_ids"), t("attention_mask")

    def state_dict(self) -> State:
        return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in self.module.state_dict().items()}

    def forward(self, batch: Batch) -> Taps:
        self.module.eval()
        with torch.inference_mode():
            hidden, scores, pooled, logits = self.module(*self.inputs(batch))
        cpu = lambda t: t.float().cpu().numpy()  # noqa: E731
        return Taps(hidden_states=tuple(map(cpu, hidden)), attention_scores=tuple(map(cpu, scores)),
                    pooled=cpu(pooled), logits=None if logits is None else cpu(logits))

    def predict(self, batch: Batch) -> np.ndarray:
        self.module.eval()
        with torch.inference_mode():
            return self.module(*self.inputs(batch))[3].float().cpu().numpy()


def loss_term(term: LossTerm, student: TorchBert, s_out, t_out, labels: torch.Tensor | None) -> torch.Tensor:
    """One unweighted term, as documented in distill_engine.graph.losses.LOSS_KINDS."""
    s_hidden, s_scores, _, s_logits = s_out
    if term.kind == "attention_mse":
        t_scores = t_out[1]
        total = 0.0
        for s, t in term.pairs:
            a_s = torch.where(s_scores[s] <= ATTENTION_ZERO_BELOW, torch.zeros_like(s_scores[s]), s_scores[s])
            a_t = torch.where(t_scores[t] <= ATTENTION_ZERO_BELOW, torch.zeros_like(t_scores[t]), t_scores[t])
            total = total + F.mse_loss(a_s, a_t)
        return total
    if term.kind in ("embedding_mse", "hidden_mse"):
        t_hidden = t_out[0]
        return sum(F.mse_loss(student.project(s_hidden[s], s), t_hidden[t]) for s, t in term.pairs)
    if term.kind == "soft_cross_entropy":
        temp = term.temperature
        return torch.mean(-F.softmax(t_out[3] / temp, dim=-1) * F.log_softmax(s_logits / temp, dim=-1))
    if term.kind == "hard_cross_entropy":
        return F.cross_entropy(s_logits, labels.long())
    if term.kind == "mse":
        return F.mse_loss(s_logits[:, 0], labels.float())
    raise ValueError(f"unknown loss kind {term.kind}")


class TorchTrainer:
    """AdamW (no decay on bias/LayerNorm), the core's per-step learning rates, clipping, and the
    objective of a `DistillGraph`. The teacher runs under no_grad: no graph is recorded for it."""

    def __init__(self, student: TorchModel, teacher: TorchModel | None, spec: TrainSpec):
        self.student, self.teacher, self.spec = student, teacher, spec
        self.graph: DistillGraph = spec.graph
        self.step_index = 0
        opt = spec.optimizer
        named = list(student.module.named_parameters())
        groups = [
            {"params": [p for n, p in named if not is_no_decay(n)], "weight_decay": opt.weight_decay},
            {"params": [p for n, p in named if is_no_decay(n)], "weight_decay": 0.0},
        ]
        self.params = [p for _, p in named]
        self.optimizer = torch.optim.AdamW(groups, lr=float(spec.learning_rates[0]) if len(spec.learning_rates) else 0.0,
                                           betas=tuple(opt.betas), eps=opt.eps)
        self.generator_seed = spec.seed
        torch.manual_seed(spec.seed)
        # Only the logits need the pooler/classifier; GD/TD1 skip them (a measurable saving).
        self.need_logits = self.graph.trains_logits
        if spec.loss_scale is not None:
            # float32 training needs no loss scaling; mixed precision on GPU would use torch.amp.
            self.scaler = torch.amp.GradScaler(student.torch_device.type, init_scale=spec.loss_scale,
                                               growth_interval=spec.loss_scale_window)
        else:
            self.scaler = None

    def _objective(self, batch: Batch, train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.student.inputs(batch)
        labels = None
        if "labels" in batch and batch["labels"] is not None:
            labels = torch.as_tensor(np.asarray(batch["labels"]), device=self.student.torch_device)
        t_out = None
        if self.graph.needs_teacher:
            # no_grad, not inference_mode: the teacher's outputs are saved for the student's
            # backward (MSE targets), which inference tensors do not allow.
            with torch.no_grad():
                t_out = self.teacher.module(*inputs, need_logits=self.need_logits)
        self.student.module.train(train)
        s_out = self.student.module(*inputs, need_logits=self.need_logits)
        terms = {t.kind: loss_term(t, self.student.module, s_out, t_out, labels) for t in self.graph.terms}
        total = sum(t.weight * terms[t.kind] for t in self.graph.terms)
        return total, terms

    def step(self, batch: Batch) -> dict[str, float]:
        lr = float(self.spec.learning_rates[min(self.step_index, len(self.spec.learning_rates) - 1)])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, terms = self._objective(batch, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        self._clip()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step_index += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["total"] = float(total.detach())
        out["lr"] = lr
        return out

    def _clip(self) -> None:
        opt = self.spec.optimizer
        if opt.clip == "global_norm":
            torch.nn.utils.clip_grad_norm_(self.params, opt.max_grad_norm)
        elif opt.clip == "per_parameter":
            for p in self.params:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], opt.max_grad_norm)

    def losses(self, batch: Batch) -> dict[str, float]:
        with torch.no_grad():
            total, terms = self._objective(batch, train=False)
        out = {k: float(v) for k, v in terms.items()}
        out["total"] = float(total)
        return out

    def gradients(self, batch: Batch) -> dict[str, np.ndarray]:
        """d(total)/d(parameter) without updating (no dropout), canonical names; for conformance."""
        self.optimizer.zero_grad(set_to_none=True)
        total, _ = self._objective(batch, train=False)
        total.backward()
        grads = {n: (p.grad.detach().cpu().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
                 for n, p in self.student.module.named_parameters()}
        self.optimizer.zero_grad(set_to_none=True)
        return grads


class TorchBackend:
    """The engine's `Backend` protocol for PyTorch."""

    name = "torch"

    def version(self) -> str:
        return f"{__version__} (torch {torch.__version__})"

    def device_kinds(self) -> tuple[str, ...]:
        return ("cpu", "gpu")

    def available_devices(self) -> list[Device]:
        gpus = [Device("gpu", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        return [Device("cpu"), *gpus]

    def check_device(self, device: Device) -> None:
        check_device_in(self, device)

    def load_model(self, config: BertConfig, state: State, device: Device) -> TorchModel:
        self.check_device(device)
        return TorchModel(config, state, device)

    def trainer(self, student: TorchModel, teacher: TorchModel | None, spec: TrainSpec) -> TorchTrainer:
        return TorchTrainer(student, teacher, spec)
