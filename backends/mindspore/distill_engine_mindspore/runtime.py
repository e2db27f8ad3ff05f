"""How this backend runs MindSpore code: compiled (mindspore.jit, graph) or eager (PyNative), and where.

Compilation goes through `mindspore.jit` rather than the process-wide GRAPH_MODE switch, so the
backend never changes the execution mode of other MindSpore code in the same process. Setting
DISTILL_ENGINE_MS_PYNATIVE=1 runs everything eagerly instead (slow; for debugging with prints and
pdb inside `construct`).
"""

from __future__ import annotations

import logging
import os

import mindspore as ms

from distill_engine.device import Device
from distill_engine.errors import DeviceError

PYNATIVE_ENV = "DISTILL_ENGINE_MS_PYNATIVE"
TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
# The compile backend, named rather than left to MindSpore: before 2.9 an unnamed one meant GE on
# Atlas training chips (910A), which compiles no dynamic-shape graph (Graph's set_inputs switch
# would fail at the second batch shape); "ms_backend" (kernel by kernel, "O0") serves dynamic
# shapes on every target.
JIT_BACKEND = "ms_backend"

# The dtype of the few small computations that want more than float32 (the pooler's tanh, the
# logit losses' softmax): float64 on a CPU, where MindSpore's float32 tanh and exp are fast
# approximations and float64 buys exact parity with the reference; float32 on GPU and Ascend
# (Ascend's AI Core has no float64 kernels, GPUs run float64 at a fraction of float32's rate).
# Set by `activate` before any graph of the process compiles: graphs read it as a constant.
WIDE = ms.float64


def wide_dtype(target: str):
    """WIDE for a MindSpore device target ("CPU", "GPU", "Ascend")."""
    return ms.float64 if target == "CPU" else ms.float32


def compile_cell(cell):
    """`cell` as a compiled MindSpore graph on the named backend (JIT_BACKEND)."""
    return ms.jit(cell, backend=JIT_BACKEND)


def pynative() -> bool:
    """True when DISTILL_ENGINE_MS_PYNATIVE asks for eager execution (read at each trainer/model build)."""
    return os.environ.get(PYNATIVE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class Graph:
    """Runs a Cell as a compiled MindSpore graph, or eagerly under DISTILL_ENGINE_MS_PYNATIVE=1.

    MindSpore compiles one graph per input shape. The first call's shapes get a static graph (the
    fastest kernels); when a later call differs in some dimension (a short last batch, padding =
    "longest"), that dimension is declared dynamic with `Cell.set_inputs` and one dynamic-shape graph
    then serves every shape: one extra compilation instead of one per batch size and length.

    With `dynamic=False` every new shape gets a static graph of its own instead. Cells that use the
    fused CPU kernels (fused.py) need this: MindSpore's AOT custom ops infer their output shapes in
    Python, which a dynamic-shape graph cannot call.
    """

    def __init__(self, cell, dynamic: bool = True):
        self.cell = cell
        self.eager = pynative()
        self.dynamic = dynamic
        self.fn = cell if self.eager else compile_cell(cell)
        self._first = None  # the first call's shapes
        self._dynamic = None  # the dimensions declared dynamic so far

    def __call__(self, *args):
        if not self.eager and self.dynamic:
            self._adapt(args)
        return self.fn(*args)

    def _adapt(self, args) -> None:
        shapes = _shapes(args)
        if self._first is None:
            self._first = shapes
            return
        dynamic = _differing(self._first, shapes, self._dynamic)
        if dynamic != self._dynamic and _any_dynamic(dynamic):
            self._dynamic = dynamic
            self.cell.set_inputs(*(_specs(a, f) for a, f in zip(args, dynamic)))


def _shapes(arg):
    if isinstance(arg, ms.Tensor):
        return tuple(arg.shape)
    if isinstance(arg, (tuple, list)):
        return tuple(_shapes(a) for a in arg)
    return None


def _differing(first, now, previous):
    """Per tensor, a tuple of flags: True where the dimension has differed from the first call."""
    if isinstance(first, tuple) and first and all(isinstance(d, int) for d in first):  # one tensor's shape
        prev = previous if previous is not None else (False,) * len(first)
        return tuple(p or a != b for p, a, b in zip(prev, first, now))
    if isinstance(first, tuple):
        prev = previous if previous is not None else (None,) * len(first)
        return tuple(_differing(f, n, p) for f, n, p in zip(first, now, prev))
    return previous


def _any_dynamic(flags) -> bool:
    if isinstance(flags, tuple):
        return any(_any_dynamic(f) for f in flags)
    return bool(flags)


def _specs(arg, flags):
    if isinstance(arg, ms.Tensor):
        shape = [None if f else d for d, f in zip(arg.shape, flags or (False,) * len(arg.shape))]
        return ms.Tensor(shape=shape, dtype=arg.dtype)
    if isinstance(arg, (tuple, list)):
        items = tuple(_specs(a, f) for a, f in zip(arg, flags if flags else (None,) * len(arg)))
        return ms.mutable(items) if items else items
    return arg


def _quiet(fn, *args):
    # MindSpore logs a warning for every absent device plugin; asking is not an error here.
    try:
        from mindspore.log import _get_logger

        logger = _get_logger()
    except Exception:  # the logger's home moved: let the warnings through rather than fail
        return fn(*args)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        logger.setLevel(level)


def available_devices() -> list[Device]:
    """cpu always; gpu:N and ascend:N when MindSpore's plugin for them loads and sees devices."""
    devices = [Device("cpu")]
    for kind, module in (("gpu", "mindspore.device_context.gpu"), ("ascend", "mindspore.device_context.ascend")):
        try:
            import importlib

            ctx = importlib.import_module(module)
            if _quiet(ctx.is_available):
                devices += [Device(kind, i) for i in range(int(_quiet(ctx.device_count)))]
        except Exception:  # a half-installed plugin means "not available", never a crash
            continue
    return devices


def plugin_problem(kind: str) -> str | None:
    """Why MindSpore serves no `kind` ("gpu", "ascend") device here, in its own words: the lines of
    its plugin-load error about that plugin (e.g. the pinned 2.10 wheel's GPU plugins want CUDA 11
    libraries: "libcudart.so.11.0: cannot open shared object file"), or None when the plugin loaded
    or MindSpore recorded nothing."""
    from mindspore._c_expression import MSContext

    context = MSContext.get_instance()
    if context.is_pkg_support_device(TARGETS[kind]):
        return None
    error = str(context.load_plugin_error() or "")
    lines = [line.strip() for line in error.splitlines() if kind in line.lower()]
    return "; ".join(lines) if lines else None


def launcher_bound() -> bool:
    """True in a worker that msrun started: `mindspore.communication.init()` binds it to its device."""
    return os.environ.get("MS_ROLE") == "MS_WORKER"


# Ascend's `precision_mode` for this backend's graphs: every cast is explicit (float16 matrix
# products only in an "fp16" graph), so the mode that keeps each op's dtype. Named rather than left
# to MindSpore: older releases defaulted to "force_fp16" on Atlas training chips (910A), which ran
# "fp32" matrix products in float16 without loss scaling.
ASCEND_PRECISION_MODE = "must_keep_origin_dtype"
# The 910A's Cube units multiply float16 only: there, "fp32" would be float16 matrix products
# without loss scaling, so the backend trains in "fp16" alone (backend.MindSporeBackend.precisions),
# and its float32 graphs (evaluation) take the mode that lets matrix products alone run in float16.
CLASSIC_ASCEND = ("ascend910",)
CLASSIC_ASCEND_PRECISION_MODE = "allow_fp32_to_fp16"


def ascend_soc() -> str:
    """The Ascend chip's SoC name ("ascend910" for 910A, "ascend910b..." for 910B), "" when unknown."""
    try:
        from mindspore._c_expression import MSContext

        return str(MSContext.get_instance().get_ascend_soc_version() or "").lower()
    except Exception:  # no Ascend plugin: no SoC
        return ""


def classic_ascend() -> bool:
    """True on an Atlas training chip (910A): no float32 matrix products in its Cube units."""
    return ascend_soc() in CLASSIC_ASCEND


def _ascend_precision() -> None:
    from mindspore.device_context.ascend import op_precision

    try:
        op_precision.precision_mode(CLASSIC_ASCEND_PRECISION_MODE if classic_ascend() else ASCEND_PRECISION_MODE)
    except RuntimeError:  # the user (or an earlier model) set it already: theirs stands
        pass


def activate(device: Device) -> None:
    """Point MindSpore at `device`. MindSpore binds a process to one device once its runtime starts,
    so asking for a second one raises DeviceError naming both. Under msrun the launcher's binding
    stands (init() chose the device of the worker's rank), as the CPU's does."""
    global WIDE
    target = TARGETS[device.kind]
    current = ms.get_current_device()
    bound = ((current.device_target, current.device_id) == (target, device.index)
             # one CPU; under msrun MindSpore numbers it by the worker's rank (cpu:1 on rank 1)
             or (target == "CPU" and current.device_target == "CPU")
             # msrun's worker: its accelerator is the launcher's choice (rank, ASCEND_RT_VISIBLE_DEVICES)
             or (current.device_target == target and launcher_bound()))
    if not bound:
        try:
            ms.set_device(target, device.index)
        except RuntimeError as exc:
            raise DeviceError(
                f'device "{device}": this process already runs MindSpore on {current.device_target.lower()}:'
                f"{current.device_id}, and MindSpore cannot switch devices within a process ({exc})") from None
    WIDE = wide_dtype(target)  # once the process is bound to the target, before its graphs compile
    if target == "Ascend":
        _ascend_precision()
