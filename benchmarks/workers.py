"""Worker processes: one implementation (the hand-written loop or an engine backend) per process.

The coordinator (run.py) starts one long-lived worker per implementation and asks each in turn to
time a few steps of a case, so repetitions interleave across implementations while no two
frameworks ever share a process (thread pools, allocators, compiled-graph caches stay apart).
Peak resident memory is measured in a fresh process per (implementation, case), since a process's
peak RSS only ever grows.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
import traceback

import numpy as np

from common import (BETAS, CLIP, EPS, LR, MAX_GRAD_NORM, PHASE_LOSSES, WEIGHT_DECAY, Case, Settings, batches,
                    case_from_key, mapping_pairs, student_config, student_state, teacher_config, teacher_state)

HANDWRITTEN = "handwritten"


def rss_mb() -> float:
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _torch_graph_probe(module):
    """Forward hook on a torch teacher: records whether its forward ran with gradient recording on
    and whether any output tensor is attached to an autograd graph."""
    import torch

    seen = []

    def flatten(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            for y in x:
                yield from flatten(y)

    def hook(_module, _inputs, output):
        outs = list(flatten(output))
        seen.append({"grad_enabled": torch.is_grad_enabled(),
                     "outputs_require_grad": any(t.requires_grad or t.grad_fn is not None for t in outs)})

    return seen, module.register_forward_hook(hook)


def _torch_teacher_check(module, run_step) -> dict:
    seen, handle = _torch_graph_probe(module)
    try:
        run_step()
    finally:
        handle.remove()
    grads = [n for n, p in module.named_parameters() if p.grad is not None]
    recorded = any(s["grad_enabled"] or s["outputs_require_grad"] for s in seen)
    return {"graph_free": bool(seen) and not recorded and not grads,
            "detail": (f"teacher forwards seen in one step: {len(seen)}; grad mode on in any: "
                       f"{any(s['grad_enabled'] for s in seen)}; outputs attached to a graph: "
                       f"{any(s['outputs_require_grad'] for s in seen)}; teacher parameters with .grad: {len(grads)}")}


def gemm_peak(n: int, repeats: int) -> dict:
    """float32 GEMM rate of torch.matmul on n x n matrices: median of `repeats` after a warm-up."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    c = torch.empty(n, n)
    torch.matmul(a, b, out=c)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=c)
        times.append(time.perf_counter() - start)
    rates = [2 * n**3 / t / 1e9 for t in times]
    return {"gflops": statistics.median(rates), "all": rates}


class HandwrittenImpl:
    name = HANDWRITTEN

    def __init__(self, settings: Settings):
        import torch

        import handwritten

        self.hw, self.torch, self.settings = handwritten, torch, settings
        _set_torch_threads(settings.threads)
        self.version = f"plain PyTorch loop (torch {torch.__version__})"
        self.teachers: dict[str, object] = {}
        self.cases: dict[str, dict] = {}

    def info(self) -> dict:
        return {"version": self.version, "torch_threads": self.torch.get_num_threads()}

    def teacher(self, name: str):
        if name not in self.teachers:
            state, _ = teacher_state(name, self.settings)
            self.teachers[name] = self.hw.load(teacher_config(name, self.settings), state)
        return self.teachers[name]

    def build(self, case: Case) -> None:
        s_cfg = student_config(case, self.settings)
        student = self.hw.load(s_cfg, student_state(case, self.settings))
        entry = {"student": student, "batches": batches(case, self.settings), "i": 0, "trainer": None}
        if case.trains:
            t_cfg = teacher_config(case.teacher, self.settings)
            phase = "prediction" if case.phase == "td2" else "intermediate"
            entry["trainer"] = self.hw.HandwrittenTrainer(
                student, self.teacher(case.teacher), phase, mapping_pairs(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers),
                lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
        self.cases[case.key] = entry

    def check(self, case: Case, batch) -> dict:
        entry = self.cases[case.key]
        if entry["trainer"] is None:
            return {"logits": self.hw.predict(entry["student"], batch)}
        return entry["trainer"].losses(batch)

    def step(self, case: Case) -> None:
        entry = self.cases[case.key]
        batch = entry["batches"][entry["i"] % len(entry["batches"])]
        entry["i"] += 1
        if entry["trainer"] is None:
            self.hw.predict(entry["student"], batch)
        else:
            entry["trainer"].step(batch)

    def teacher_check(self, case: Case) -> dict:
        return _torch_teacher_check(self.teacher(case.teacher), lambda: self.step(case))

    def peak(self, n: int, repeats: int) -> dict:
        return gemm_peak(n, repeats)


def engine_backend(name: str, threads: int):
    """(backend, cpu device) of an installed engine backend, checked; torch's threads set if it loaded torch."""
    from distill_engine import plugins
    from distill_engine.device import Device

    backend = plugins.get_backend(name)
    device = Device("cpu")
    backend.check_device(device)
    if "torch" in sys.modules:
        _set_torch_threads(threads)
    return backend, device


def framework_info(version: str) -> dict:
    """What a worker says of itself: the implementation's version and its frameworks' threads/versions."""
    out = {"version": version}
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    if "mindspore" in sys.modules:
        out["mindspore"] = sys.modules["mindspore"].__version__
    return out


class EngineImpl:
    """An engine backend, driven only through the protocol (distill_engine.backend)."""

    def __init__(self, name: str, settings: Settings):
        self.name, self.settings = name, settings
        self.backend, self.device = engine_backend(name, settings.threads)
        self.version = self.backend.version()
        self.teachers: dict[str, object] = {}
        self.cases: dict[str, dict] = {}

    def info(self) -> dict:
        return framework_info(self.version)

    def teacher(self, name: str):
        if name not in self.teachers:
            state, _ = teacher_state(name, self.settings)
            self.teachers[name] = self.backend.load_model(teacher_config(name, self.settings), state, self.device)
        return self.teachers[name]

    def build(self, case: Case) -> None:
        from distill_engine.backend import TrainSpec
        from distill_engine.graph import build_graph, build_mapping
        from distill_engine.optim import OptimizerSpec

        s_cfg = student_config(case, self.settings)
        student = self.backend.load_model(s_cfg, student_state(case, self.settings), self.device)
        entry = {"student": student, "batches": batches(case, self.settings), "i": 0, "trainer": None}
        if case.trains:
            t_cfg = teacher_config(case.teacher, self.settings)
            mapping = build_mapping("uniform", s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
            graph = build_graph(PHASE_LOSSES[case.phase], s_cfg, t_cfg, mapping, where=case.key)
            spec = TrainSpec(graph=graph,
                             optimizer=OptimizerSpec(lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, clip=CLIP,
                                                     max_grad_norm=MAX_GRAD_NORM),
                             learning_rates=np.full(10_000, LR, np.float32), seed=0)
            entry["trainer"] = self.backend.trainer(student, self.teacher(case.teacher), spec)
        self.cases[case.key] = entry

    def check(self, case: Case, batch) -> dict:
        entry = self.cases[case.key]
        if entry["trainer"] is None:
            return {"logits": entry["student"].predict(batch)}
        return entry["trainer"].losses(batch)

    def step(self, case: Case) -> None:
        entry = self.cases[case.key]
        batch = entry["batches"][entry["i"] % len(entry["batches"])]
        entry["i"] += 1
        if entry["trainer"] is None:
            entry["student"].predict(batch)
        else:
            entry["trainer"].step(batch)

    def teacher_check(self, case: Case) -> dict:
        teacher = self.teacher(case.teacher)
        module = getattr(teacher, "module", None)
        if module is not None and "torch" in sys.modules and isinstance(module, sys.modules["torch"].nn.Module):
            return _torch_teacher_check(module, lambda: self.step(case))
        cell = getattr(teacher, "cell", None)
        if cell is not None:  # MindSpore: the step differentiates only its own weight tuple
            trainer = self.cases[case.key]["trainer"]
            teacher_ids = {id(p) for p in cell.get_parameters()}
            step_cell = getattr(trainer, "_step_cell", None)
            weights = list(getattr(step_cell, "weights", ()))
            overlap = sum(id(p) in teacher_ids for p in weights)
            before = teacher.state_dict()
            self.step(case)
            after = teacher.state_dict()
            unchanged = all(np.array_equal(before[k], after[k]) for k in before)
            known = step_cell is not None and bool(weights)
            return {"graph_free": known and overlap == 0 and unchanged,
                    "detail": (f"teacher parameters among the compiled step's differentiated weights: "
                               f"{overlap if known else 'unknown (no _step_cell.weights)'}; teacher weights "
                               f"unchanged by a step: {unchanged}; the teacher runs in its own inference graph "
                               "whose taps enter the step as inputs")}
        before = teacher.state_dict()
        self.step(case)
        after = teacher.state_dict()
        unchanged = all(np.array_equal(before[k], after[k]) for k in before)
        return {"graph_free": None, "detail": f"not inspectable for this backend; teacher weights unchanged: {unchanged}"}


def make_impl(name: str, settings: Settings):
    return HandwrittenImpl(settings) if name == HANDWRITTEN else EngineImpl(name, settings)


def _redirect_output(log_path: str | None) -> None:
    """Send this process's stdout/stderr (framework chatter included) to a log file."""
    if not log_path:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}".strip(), "traceback": traceback.format_exc()}


def _setup(impl, keys: list[str], settings: Settings) -> dict:
    """Build every case, compute the no-dropout check values, run the warm-up steps (the last one
    probes whether the teacher's forward records a graph)."""
    out = {}
    for key in keys:
        case = case_from_key(key)
        res: dict = {}
        try:
            start = time.perf_counter()
            impl.build(case)
            res["build_s"] = time.perf_counter() - start
            if settings.check:
                check_batch = batches(case, settings, count=1, seed=12345)[0]
                start = time.perf_counter()
                values = impl.check(case, check_batch)
                res["check_s"] = time.perf_counter() - start
                res["check"] = {k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in values.items()}
            warm = []
            for i in range(max(settings.warmup, 1)):
                start = time.perf_counter()
                if i == max(settings.warmup, 1) - 1 and case.trains:
                    # the last warm-up step runs with the probe of the teacher's graph recording
                    try:
                        res["teacher_check"] = {"ok": True, **impl.teacher_check(case)}
                    except Exception as exc:
                        res["teacher_check"] = {"ok": False, **_error(exc)}
                else:
                    impl.step(case)
                warm.append(time.perf_counter() - start)
            res["warmup_s"] = warm
            res["ok"] = True
        except Exception as exc:  # one broken case must not hide the others
            res.update(_error(exc), ok=False)
        out[key] = res
    return out


def serve(conn, log_path: str | None, threads: int, make, handle) -> None:
    """A worker's life: output to `log_path`, `make()` the implementation (its `info()` is the
    hello), then answer each message with `handle(impl, msg)` until "exit" (which calls the
    implementation's `cleanup()` if it has one and reports the peak RSS). An exception answers
    that one message with an error; the worker keeps serving."""
    _redirect_output(log_path)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        impl = make()
        conn.send({"ok": True, "info": impl.info()})
    except Exception as exc:
        conn.send({"ok": False, **_error(exc)})
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg["cmd"] == "exit":
                getattr(impl, "cleanup", lambda: None)()
                conn.send({"ok": True, "peak_rss_mb": peak_rss_mb()})
                return
            result = handle(impl, msg)
        except Exception as exc:
            result = {"ok": False, **_error(exc)}
        conn.send(result)


def worker_main(conn, impl_name: str, settings: Settings, log_path: str | None) -> None:
    """Serve run.py's commands over `conn` until "exit"."""

    def handle(impl, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "setup":
            return {"ok": True, "cases": _setup(impl, msg["keys"], settings)}
        if cmd == "time":
            case = case_from_key(msg["key"])
            times = []
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(msg["steps"]):
                start = time.perf_counter()
                impl.step(case)
                times.append(time.perf_counter() - start)
            # cores kept busy on average (all threads of this process): ~threads when it had the CPU to itself
            cores = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
            return {"ok": True, "times": times, "cores_busy": cores}
        if cmd == "peak":
            return {"ok": True, **impl.peak(msg["n"], msg["repeats"])}
        if cmd == "teacher_check":
            return {"ok": True, **impl.teacher_check(case_from_key(msg["key"]))}
        return {"ok": False, "error": f"unknown command {cmd}"}

    serve(conn, log_path, settings.threads, lambda: make_impl(impl_name, settings), handle)


def memory_main(conn, impl_name: str, key: str, settings: Settings, steps: int, log_path: str | None) -> None:
    """In a fresh process: import, build one case, run 1 + `steps` steps; report peak RSS."""
    _redirect_output(log_path)
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    try:
        base = rss_mb()
        impl = make_impl(impl_name, settings)
        case = case_from_key(key)
        after_import = rss_mb()
        impl.build(case)
        after_build = rss_mb()
        # The first step compiles (MindSpore) and allocates Adam's moments; during the second one's
        # forward the first one's gradients are still alive: the steady-state peak.
        for _ in range(1 + steps):
            impl.step(case)
        conn.send({"ok": True, "peak_rss_mb": peak_rss_mb(), "rss_start_mb": base, "rss_after_import_mb": after_import,
                   "rss_after_build_mb": after_build, "rss_end_mb": rss_mb()})
    except Exception as exc:
        conn.send({"ok": False, **_error(exc)})
