"""Fused CPU kernels (kernels/fused_cpu.cc) as MindSpore ops, with their gradients.

MindSpore 2.10's CPU kernels for the element-wise part of a BERT step are slow: exact GELU runs as
Erf + Div + Mul + Add (Erf alone 30-45 ms on 32 x 128 x 1536), LayerNormGrad takes 27-32 ms per
call, the softmax gradient expands into ReduceSum/Sub/Mul, and a mean over a 6M-element attention
map is a ReduceMean plus a Tile in the backward. Together they made a distillation step more than
twice as slow as PyTorch's (README, Performance). The kernels here do each of these in one or two
passes, on every core:

| op | forward | gradient |
|---|---|---|
| `bias_gelu(x, b)` | gelu(x + b), exact erf GELU | dx = dy gelu'(x + b); db = sum_rows dx |
| `softmax(x)` | softmax over the last axis | dx = y (dy - sum(dy y)) |
| `add_layer_norm(a, r, g, b, eps)` | LayerNorm(a + r) g + b | da = dr, dg, db (statistics recomputed) |
| `mse_zero_below(a, b, t)` | mean((z(a) - z(b))^2), z(v) = 0 where v <= t | da = 2 (z(a) - z(b)) / n, 0 where a <= t |

They are `ops.Custom(func_type="aot")` primitives whose `bprop` calls the matching gradient kernel,
so they compile into the same graph as the rest of the step. They serve the CPU only: on GPU and
Ascend MindSpore's own (fused) kernels run. The engine's numpy reference checks them like every
other path (tests/test_fused_kernels.py and the conformance suite).

The library is compiled on first use with the machine's C++ compiler (`CXX`, default g++) into a
cache (`DISTILL_ENGINE_MS_KERNEL_CACHE`, default ~/.cache/distill-engine/kernels), keyed by the
source, the flags and the CPU, and written atomically. With no compiler, or
DISTILL_ENGINE_MS_FUSED=0, the backend uses MindSpore's built-in ops instead: the same numbers up to
float32 rounding, slower.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import mindspore as ms
from mindspore import Tensor, ops

from distill_engine.io import write_atomically

FUSED_ENV = "DISTILL_ENGINE_MS_FUSED"
CACHE_ENV = "DISTILL_ENGINE_MS_KERNEL_CACHE"
SOURCE = Path(__file__).resolve().parent / "kernels" / "fused_cpu.cc"
# Compiled with -ffast-math (GCC vectorises expf only so), but linked without it: linking a shared
# library with -ffast-math adds crtfastmath.o, whose constructor turns on flush-to-zero for the whole
# process when the library loads, changing numpy's and torch's float results beside it.
COMPILE_FLAGS = ("-O3", "-march=native", "-ffast-math", "-std=c++17", "-fPIC", "-pthread", "-c")
LINK_FLAGS = ("-shared", "-pthread")
NO_THRESHOLD = -3.0e38  # mse_zero_below's threshold for a plain MSE: nothing is zeroed


def requested() -> bool:
    """False when DISTILL_ENGINE_MS_FUSED turns the fused kernels off (read at each model build)."""
    return os.environ.get(FUSED_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distill-engine" / "kernels"


@lru_cache(maxsize=None)
def library() -> Path | None:
    """The compiled kernel library, built on first call; None (with one warning) if it cannot be."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        warnings.warn(f"distill-engine: no C++ compiler ({compiler}) to build the fused MindSpore CPU kernels; "
                      "using MindSpore's built-in ops (slower)", RuntimeWarning, stacklevel=2)
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(COMPILE_FLAGS + LINK_FLAGS).encode() + compiler.encode()
                         + _cpu_model().encode() + platform.machine().encode()).hexdigest()[:16]
    target = _cache_dir() / f"fused_cpu-{key}.so"
    if target.exists():
        return target

    def build(built: Path) -> None:
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            obj = Path(work) / "fused_cpu.o"
            for command in ([compiler, *COMPILE_FLAGS, "-o", str(obj), str(SOURCE)],
                            [compiler, *LINK_FLAGS, "-o", str(built), str(obj)]):
                subprocess.run(command, check=True, capture_output=True, text=True)

    try:  # atomic: a concurrent process sees the whole library or none
        write_atomically(target, build, keep_suffix=True, fsync=False)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(f"distill-engine: building the fused MindSpore CPU kernels failed ({detail.strip()[:500]}); "
                      "using MindSpore's built-in ops (slower)", RuntimeWarning, stacklevel=2)
        return None
    return target


def _same(x, *_):
    return x


def _same_as_first_two(x, y, *_):
    return x, y


class FusedKernels:
    """The fused ops as MindSpore primitives, one set per process (see `kernels()`)."""

    def __init__(self, lib: Path):
        def custom(name, out_shape, out_dtype, bprop=None):
            return ops.Custom(f"{lib}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)

        bias_gelu_grad = custom("BiasGeluGrad", _same_as_first_two, _same_as_first_two)

        def bias_gelu_bprop(x, b, out, dout):
            return bias_gelu_grad(x, b, dout)

        self.bias_gelu = custom("BiasGelu", _same, _same, bias_gelu_bprop)

        softmax_grad = custom("SoftmaxGrad", _same, _same)

        def softmax_bprop(x, out, dout):
            return (softmax_grad(out, dout),)

        self.softmax = custom("Softmax", _same, _same, softmax_bprop)

        layer_norm_grad = custom("AddLayerNormGrad", lambda a, r, g, e, dy: (a, g, g),
                                 lambda a, r, g, e, dy: (a, g, g))

        def layer_norm_bprop(a, r, gamma, beta, eps, out, dout):
            dx, dgamma, dbeta = layer_norm_grad(a, r, gamma, eps, dout)
            return dx, dx, dgamma, dbeta, ops.zeros_like(eps)

        self.add_layer_norm = custom("AddLayerNorm", _same, _same, layer_norm_bprop)

        mse_grad = custom("MseZeroBelowGrad", _same, _same)

        def mse_bprop(a, b, threshold, out, dout):
            # b is a teacher tap (never differentiated); its zero gradient is what autodiff asks for.
            return mse_grad(a, b, threshold, dout), ops.zeros_like(b), ops.zeros_like(threshold)

        self.mse = custom("MseZeroBelow", lambda a, b, t: [1], lambda a, b, t: a, mse_bprop)


@lru_cache(maxsize=None)
def kernels() -> FusedKernels | None:
    """The process's fused kernels, or None when they are turned off or cannot be built."""
    lib = library()
    return FusedKernels(lib) if lib is not None else None


def for_device(kind: str) -> FusedKernels | None:
    """The fused kernels for a model on device `kind` ("cpu", "gpu", "ascend"): CPU only."""
    if kind != "cpu" or not requested():
        return None
    return kernels()


def scalar(value: float) -> Tensor:
    """A [1] float32 constant: how the kernels take eps and thresholds."""
    return Tensor([value], ms.float32)
