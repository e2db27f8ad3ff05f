"""The PyTorch backend behind the engine's protocol: models, devices, trainers, exports, and
data-parallel runs under torchrun (`TorchBackend.process_group` / `launch_command`).

The training step is `trainer.TorchTrainer`; devices and precisions are `runtime`'s.

Data parallel (`TrainSpec.world_size` > 1, started by torchrun): gloo on the CPU, NCCL on GPUs
(each rank on cuda:<local rank>), with a gloo group beside NCCL for the runner's host-side
agreement (`distributed.ProcessGroup.all_sum`); the trainer wraps the student in
DistributedDataParallel (see trainer.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import timedelta

import numpy as np
import torch

from distill_engine.backend import Batch, State, TrainSpec, check_device_in
from distill_engine.bert import BertConfig
from distill_engine.models.registry import build_model
from distill_engine.device import Device
from distill_engine.errors import BackendError
from distill_engine.graph import Taps
from distill_engine_torch import __version__, runtime
from distill_engine_torch.model import TorchBert
from distill_engine_torch.trainer import TorchTrainer


class TorchModel:
    """A model family's nn.Module on a device, seen through the engine's `Model` protocol.

    `module` is the family's network (default: BERT's `TorchBert`); a model-family plugin passes its
    own, with TorchBert's forward contract (hidden states, attention scores, pooled, logits, value
    vectors; `project`, `freeze_pad_row`), so the trainer and the losses serve it unchanged."""

    def __init__(self, config: BertConfig, state: State, device: Device, module: torch.nn.Module | None = None):
        self.config = config
        self.device = device
        self.torch_device = runtime.torch_device(device)
        self.module = TorchBert(config) if module is None else module
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
            hidden, scores, pooled, logits, values = self.module(*self.inputs(batch))
        cpu = lambda t: t.float().cpu().numpy()  # noqa: E731
        return Taps(hidden_states=tuple(map(cpu, hidden)), attention_scores=tuple(map(cpu, scores)),
                    pooled=cpu(pooled), logits=None if logits is None else cpu(logits), values=tuple(map(cpu, values)))

    def predict(self, batch: Batch) -> np.ndarray:
        self.module.eval()
        with torch.inference_mode():
            return self.module(*self.inputs(batch))[3].float().cpu().numpy()


# torchrun (torch.distributed.run) sets these in every worker it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A collective that waits longer than this for a rank fails (and the launcher stops the job).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class TorchProcessGroup:
    """torch.distributed's default group as the core's `distributed.ProcessGroup`."""

    launcher = "torchrun"

    def __init__(self, rank: int, world_size: int, local_rank: int, host_group):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.host_group = host_group  # gloo: CPU tensors (the default group is NCCL on GPUs)

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.array(values, np.float64).ravel())
        torch.distributed.all_reduce(t, group=self.host_group)
        return t.numpy()

    def close(self) -> None:
        """Leave the group at the end of the run (torch warns of leaked NCCL communicators, and
        NCCL may hang at exit, without destroy_process_group)."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class TorchBackend:
    """The engine's `Backend` protocol for PyTorch."""

    name = "torch"
    resume_exact_with_dropout = True  # TorchTrainer.state holds torch's generators

    def version(self) -> str:
        return f"{__version__} (torch {torch.__version__})"

    def device_kinds(self) -> tuple[str, ...]:
        return ("cpu", "gpu")

    def available_devices(self) -> list[Device]:
        return runtime.available_devices()

    def check_device(self, device: Device) -> None:
        check_device_in(self, device)

    def precisions(self, device: Device) -> tuple[str, ...]:
        """bf16 on cpu (autocast's CPU path) and on GPUs that have bfloat16 (Ampere on);
        fp16 on GPUs only: torch's CPU float16 matmuls are slow, and bf16 needs no loss scaling."""
        if device.kind != "gpu":
            return ("fp32", "bf16")
        bf16 = runtime.native_bf16(device)
        return ("fp32", "bf16", "fp16") if bf16 else ("fp32", "fp16")

    def load_model(self, config, state: State, device: Device) -> TorchModel:
        """A model of `config`'s family, built by the implementation its family registered for torch."""
        self.check_device(device)
        return build_model("torch", config, state, device)

    def trainer(self, student: TorchModel, teacher: TorchModel | None, spec: TrainSpec) -> TorchTrainer:
        return TorchTrainer(student, teacher, spec)

    # -- export (distill-engine export; distill_engine_torch.export) -------------------------------
    export_formats = ("onnx",)

    def export_model(self, fmt: str, config: BertConfig, state: State, path, *, batch_size: int = 0,
                     seq_length: int = 0) -> dict:
        from distill_engine_torch.export import export_onnx

        if fmt not in self.export_formats:
            raise BackendError(f"the torch backend does not export {fmt}")
        return export_onnx(config, state, path, batch_size=batch_size, seq_length=seq_length)

    def run_exported(self, fmt: str, path, batch: Batch) -> dict[str, np.ndarray]:
        from distill_engine_torch.export import run_onnx

        return run_onnx(path, batch)

    # -- data parallel ----------------------------------------------------------------------------
    def process_group(self, device: Device) -> TorchProcessGroup | None:
        """The torchrun group this process belongs to (None outside torchrun): gloo on the CPU,
        NCCL on GPUs with this rank on cuda:<LOCAL_RANK>."""
        env = os.environ
        if not all(k in env for k in TORCHRUN_ENV):
            return None
        try:
            rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        except ValueError:
            raise BackendError("torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers "
                               f"(got {env['RANK']!r}, {env['WORLD_SIZE']!r}, {env['LOCAL_RANK']!r})") from None
        if world == 1:
            return None
        dist = torch.distributed
        if device.kind == "gpu":
            if not torch.cuda.is_available() or local >= torch.cuda.device_count():
                raise BackendError(f"rank {rank}: local rank {local} has no GPU "
                                   f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} visible)")
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            if device.kind == "gpu":
                dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=torch.device("cuda", local))
            else:
                dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
        host = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if device.kind == "gpu" else None
        return TorchProcessGroup(rank, world, local, host)

    def launch_command(self, nproc: int, argv: list[str], log_dir: str) -> list[str]:
        """torchrun on this machine (--standalone: a free local port), running distill-engine; the
        workers write to the console (torchrun prefixes nothing; the runner's rank 0 alone prints)."""
        script = shutil.which("distill-engine", path=os.path.dirname(sys.executable)) or shutil.which("distill-engine")
        target = [script] if script else ["-m", "distill_engine.cli"]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                *target, *argv]


def bert_model(config: BertConfig, state: State, device: Device) -> TorchModel:
    """The BERT family's torch implementation (registered in `distill_engine_torch.plugin`)."""
    return TorchModel(config, state, device)
