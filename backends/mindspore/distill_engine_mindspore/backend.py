"""The MindSpore backend behind the engine's protocol: models, devices, trainers, and data-parallel
runs under msrun (`MindSporeBackend.process_group` / `launch_command`).

Data parallel is MindSpore's own: `mindspore.communication.init()` in each worker msrun starts
(HCCL on Ascend, NCCL on GPU, the CPU collective msrun provides on a CPU machine), the
DATA_PARALLEL auto-parallel context with gradient mean, and a `nn.DistributedGradReducer` inside
the compiled step (trainer.TrainStep), so the all-reduce is part of the step's graph. The runner's
host-side agreement (`distributed.ProcessGroup.all_sum`) is `comm_func.all_reduce` on the world
group.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from distill_engine.backend import Batch, State, TrainSpec, check_device_in
from distill_engine.bert import BertConfig
from distill_engine.models.registry import build_model, parameter_shapes
from distill_engine.device import Device
from distill_engine.errors import BackendError, CheckpointError, DeviceError
from distill_engine.graph import Taps
from distill_engine_mindspore import __version__, fused, runtime
from distill_engine_mindspore.model import BertCell
from distill_engine_mindspore.trainer import MindSporeTrainer


class _Forward(nn.Cell):
    """Inference forward returning the taps; `need_logits` and `need_values` are fixed per compiled
    graph (without `need_values` the value vectors stay inside the graph: a frozen teacher's outputs
    live as long as the step that reads them, and only MiniLM's value relation reads values)."""

    def __init__(self, cell: BertCell, need_logits: bool, need_values: bool = True):
        super().__init__(auto_prefix=False)  # keep the canonical parameter names
        self.cell = cell
        self.need_logits = need_logits
        self.need_values = need_values

    def construct(self, input_ids, token_type_ids, attention_mask):
        hidden, scores, pooled, logits, values = self.cell.taps(input_ids, token_type_ids, attention_mask,
                                                                self.need_logits, False)
        return hidden, scores, pooled, logits, values if self.need_values else ()


def _check_names(config: BertConfig, state: State) -> None:
    # The core checks states before they reach a backend; this guards direct API use.
    expected = parameter_shapes(config)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    bad = [k for k in expected if k in state and tuple(np.shape(state[k])) != expected[k]]
    if missing or extra or bad:
        raise CheckpointError("model state does not match the config: "
                              + "; ".join(f"{what} {', '.join(names)}" for what, names in
                                          (("missing", missing), ("unexpected", extra), ("wrong shape", bad)) if names))


class MindSporeModel:
    """A BertCell on a device, seen through the engine's `Model` protocol. `cell` is the live
    network (parameters update in place when a trainer steps)."""

    def __init__(self, config: BertConfig, state: State, device: Device, cell: nn.Cell | None = None):
        _check_names(config, state)
        runtime.activate(device)
        self.config = config
        self.device = device
        # the family's network (default: BERT's BertCell); a model-family plugin passes its own, with
        # BertCell's construct contract, so the trainer and the losses serve it unchanged
        self.cell = BertCell(config, state, fused.for_device(device.kind)) if cell is None else cell
        self.cell.set_train(False)
        self._forwards: dict[tuple[bool, bool, int | None], tuple[_Forward, object]] = {}

    def tensors(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's ids, segment ids and mask as int32 tensors."""
        ids = np.asarray(batch["input_ids"])
        if ids.ndim != 2 or ids.shape[1] > self.config.max_position_embeddings:
            raise BackendError(f"input_ids of shape {ids.shape}: expected [batch, length] with length at most "
                               f"max_position_embeddings = {self.config.max_position_embeddings}")
        return tuple(Tensor(np.asarray(batch[k]).astype(np.int32, copy=False))
                     for k in ("input_ids", "token_type_ids", "attention_mask"))

    def taps_tensors(self, input_ids, token_type_ids, attention_mask, need_logits: bool = True,
                     chunk: int | None = None, need_values: bool = True):
        """Inference taps as MindSpore tensors (hidden tuple, scores tuple, pooled, logits, value
        vectors tuple: empty without `need_values`).

        With `chunk`, a batch larger than `chunk` runs as ceil(B / chunk) forwards of `chunk`
        sequences each (the last one padded by repeating rows, whose outputs are dropped) and the
        taps are concatenated. MindSpore's CPU graphs keep every intermediate of a forward alive
        (measured: 3.6 GB resident for the MiniLM teacher at batch 32 x length 128, 1.3 GB at 8),
        so a frozen teacher can run in chunks (DISTILL_ENGINE_MS_TEACHER_CHUNK): the same taps up to
        float32 rounding, 1.6 GB instead of 3.6 GB for chunks of 8. One chunk shape means one graph.
        """
        key = (need_logits, need_values, chunk)
        if key not in self._forwards:
            cell = _Forward(self.cell, need_logits, need_values)
            self._forwards[key] = (cell, runtime.Graph(cell, self.cell.dynamic_shapes))
        cell, fn = self._forwards[key]
        cell.set_train(False)
        b = input_ids.shape[0]
        if chunk is None or b <= chunk:
            return fn(input_ids, token_type_ids, attention_mask)
        inputs = (input_ids, token_type_ids, attention_mask)
        pad = -b % chunk
        if pad:
            rows = ops.arange(b + pad) % b  # repeat the first rows to fill the last chunk
            inputs = tuple(ops.gather(t, rows, 0) for t in inputs)
        outs = [fn(*(t[i:i + chunk] for t in inputs)) for i in range(0, b + pad, chunk)]

        def joined(parts):
            return ops.cat(parts, 0)[:b] if pad else ops.cat(parts, 0)

        hidden, scores, values = (tuple(joined([o[k][j] for o in outs]) for j in range(len(outs[0][k])))
                                  for k in (0, 1, 4))
        return hidden, scores, joined([o[2] for o in outs]), joined([o[3] for o in outs]), values

    def state_dict(self) -> State:
        return {p.name: p.asnumpy().astype(np.float32, copy=True) for p in self.cell.get_parameters()}

    def forward(self, batch: Batch) -> Taps:
        hidden, scores, pooled, logits, values = self.taps_tensors(*self.tensors(batch))
        return Taps(hidden_states=tuple(h.asnumpy() for h in hidden),
                    attention_scores=tuple(s.asnumpy() for s in scores),
                    pooled=pooled.asnumpy(),
                    logits=logits.asnumpy() if self.config.num_labels else None,
                    values=tuple(v.asnumpy() for v in values))

    def predict(self, batch: Batch) -> np.ndarray:
        if not self.config.num_labels:
            raise BackendError("predict needs a model with a classification head (num_labels > 0)")
        return self.taps_tensors(*self.tensors(batch))[3].asnumpy()


class _AllSum(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce()  # ReduceOp.SUM over the world group

    def construct(self, x):
        return self.all_reduce(x)


class MindSporeProcessGroup:
    """MindSpore's world communication group as the core's `distributed.ProcessGroup`.

    `all_sum` is a compiled AllReduce (one small graph per vector length): in MindSpore 2.10 the
    eager `comm_func.all_reduce` has no CPU kernel ("Create kernelmod for op InnerCommAllReduce
    failed"), the graph-mode AllReduce does (about 6 ms for a few floats over 2 CPU ranks)."""

    launcher = "msrun"

    def __init__(self, rank: int, world_size: int, local_rank: int):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._sum = runtime.compile_cell(_AllSum())

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return self._sum(Tensor(np.asarray(values, np.float32).ravel())).asnumpy().astype(np.float64)


class MindSporeBackend:
    """The engine's `Backend` protocol for MindSpore."""

    name = "mindspore"
    # MindSpore's graph runs install their own C-level SIGINT handler, which sends SIGTERM to the
    # process: a Ctrl-C during a step reaches the run as SIGTERM (the interruption message says so)
    sigint_as_sigterm = True

    def version(self) -> str:
        return f"{__version__} (mindspore {ms.__version__})"

    def device_kinds(self) -> tuple[str, ...]:
        return ("cpu", "gpu", "ascend")

    def available_devices(self) -> list[Device]:
        return runtime.available_devices()

    def check_device(self, device: Device) -> None:
        try:
            check_device_in(self, device)
        except DeviceError as exc:
            # MindSpore's own reason why its plugin for this kind did not load (a GPU plugin built
            # for CUDA 11 on a CUDA 12 machine), rather than only "not available (available: cpu)"
            problem = runtime.plugin_problem(device.kind) if device.kind != "cpu" else None
            if problem is None:
                raise
            raise DeviceError(f"{exc}: MindSpore's {runtime.TARGETS[device.kind]} plugin did not load: {problem} "
                              "(what MindSpore needs on each device: docs/devices.md)") from None

    def precisions(self, device: Device) -> tuple[str, ...]:
        """fp16 (the float16 graph with dynamic loss scaling, MindSpore's model zoo setting) on GPU and
        Ascend; on a CPU float32 only: its float16 kernels are slower than float32 ones, and it has
        no bfloat16 MatMul (trainer.BF16_ABSENT). On an Atlas training chip (910A) fp16 only: its
        Cube units have no float32 matrix product (runtime.CLASSIC_ASCEND)."""
        if device.kind == "cpu":
            return ("fp32",)
        if device.kind == "ascend" and runtime.classic_ascend():
            return ("fp16",)
        return ("fp32", "fp16")

    def load_model(self, config, state: State, device: Device) -> MindSporeModel:
        """A model of `config`'s family, built by the implementation its family registered for mindspore."""
        self.check_device(device)
        return build_model("mindspore", config, state, device)

    def trainer(self, student: MindSporeModel, teacher: MindSporeModel | None, spec: TrainSpec) -> MindSporeTrainer:
        return MindSporeTrainer(student, teacher, spec)

    # -- export (distill-engine export; distill_engine_mindspore.export) ---------------------------
    export_formats = ("mindspore", "mindir")

    def export_model(self, fmt: str, config: BertConfig, state: State, path, *, batch_size: int = 0,
                     seq_length: int = 0) -> dict:
        from distill_engine_mindspore import export

        if fmt == "mindspore":
            return export.export_zoo_ckpt(config, state, path)
        if fmt == "mindir":
            return export.export_mindir(config, state, path, batch_size=batch_size, seq_length=seq_length)
        raise BackendError(f"the mindspore backend does not export {fmt}")

    def run_exported(self, fmt: str, path, batch: Batch) -> dict[str, np.ndarray]:
        from distill_engine_mindspore.export import run_mindir

        if fmt != "mindir":
            raise BackendError(f"the mindspore backend runs no {fmt} file")
        return run_mindir(path, batch)

    # -- data parallel ----------------------------------------------------------------------------
    def process_group(self, device: Device) -> "MindSporeProcessGroup | None":
        """The msrun group this worker belongs to (None outside msrun). Sets the device target first
        (communication is initialised for it), then the DATA_PARALLEL context."""
        role = os.environ.get("MS_ROLE")
        if role not in ("MS_WORKER", "MS_SCHED"):
            return None
        from mindspore.communication import get_group_size, get_local_rank, get_rank, init

        if role == "MS_SCHED":
            # msrun runs the same command as its scheduler: init() serves the cluster until the
            # workers finish; this process then ends without running the job.
            try:
                init()
            except RuntimeError as exc:
                raise SystemExit(f"msrun scheduler: {str(exc).splitlines()[0]}") from None
            raise SystemExit(0)

        if device.kind == "cpu":
            runtime.activate(device)
        else:  # no device id: under msrun, init() binds each worker to its accelerator, and
            # runtime.activate then accepts that binding rather than the recipe's index
            ms.set_device(runtime.TARGETS[device.kind])
        init()
        rank, world = get_rank(), get_group_size()
        local = get_local_rank()
        if world == 1:
            return None
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
        return MindSporeProcessGroup(rank, world, local)

    def launch_command(self, nproc: int, argv: list[str], log_dir: str) -> list[str]:
        """msrun on this machine (a free scheduler port; the workers' logs in `log_dir`, every
        worker's log tailed to the console). msrun starts workers with the `python` on PATH:
        the launching interpreter's directory goes first."""
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        msrun = shutil.which("msrun") or "msrun"
        script = shutil.which("distill-engine") or os.path.join(os.path.dirname(sys.executable), "distill-engine")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return [msrun, f"--worker_num={nproc}", f"--local_worker_num={nproc}", f"--master_port={port}",
                f"--log_dir={log_dir}", "--join=True", "--tail_worker_log=-1",
                "--cluster_time_out=120", script, *argv]

    def launch_failure(self, log_dir: str, output: list[str] | None = None) -> str | None:
        """Which rank failed first. msrun's console names the first worker that exited by its pid
        ("Worker process 21309 exit with exception. Error code: -9."); MindSpore's log lines in
        each worker_<rank>.log carry their process's pid ("[WARNING] DEVICE(21309,..."), which
        gives the rank. Else a rank's own error line, else the scheduler's summary."""
        import glob
        import re

        logs = sorted(glob.glob(os.path.join(log_dir, "worker_*.log")))
        for line in output or ():
            found = re.search(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)", line)
            if not found:
                continue
            pid, code = found.groups()
            for path in logs:
                with open(path, errors="replace") as f:
                    if f"({pid}," in f.read():
                        rank = os.path.basename(path)[len("worker_"):-len(".log")]
                        how = f"signal {-int(code)}" if int(code) < 0 else f"code {code}"
                        return f"rank {rank} (pid {pid}) exited first, with {how}; its log: {path}"
        for path in logs:  # a rank's own error line
            with open(path, errors="replace") as f:
                for line in f:
                    if line.startswith("error: [rank "):
                        return line[len("error: "):].strip()
        try:
            with open(os.path.join(log_dir, "scheduler.log"), errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        found = re.search(r"worker (\d+) is the first one timed out", text)
        if found:
            rank = found.group(1)
            return (f"rank {rank} stopped first (msrun's scheduler lost it); its log: "
                    f"{os.path.join(log_dir, f'worker_{rank}.log')}")
        return None

    def release(self) -> None:
        """Drop every compiled graph and MindSpore's cached runtime memory (ms.ms_memory_recycle).

        MindSpore keeps each graph it compiled, with its kernels and workspace, for the life of the
        process: measured on the SST-2 recipe's shapes, about 3.5 GB per phase that is never
        returned, so a five-phase pipeline ran out of 24 GB. Graphs of models still alive are
        simply compiled again on their next call."""
        ms.ms_memory_recycle()


def bert_model(config: BertConfig, state: State, device: Device) -> MindSporeModel:
    """The BERT family's MindSpore implementation (registered in `distill_engine_mindspore.plugin`)."""
    return MindSporeModel(config, state, device)
