"""Worker processes of throughput.py: one implementation (the hand-written loop, or an engine backend
with all its variants) per process, on real SST-2 batches.

The coordinator encodes SST-2 once (the engine's reader and WordPiece tokenizer), writes the arrays
to an .npz and sends every worker the same plan: for each repetition, the row indices of K
consecutive batches of the phase's epoch, in the engine's fixed and bucketed orders. A worker
builds the phase's models and trainers through the engine's protocol, warms up on every batch shape
of the plan (MindSpore compiles one graph per shape, torch.compile one or a few), then times one
(variant, repetition) per request, so the coordinator can interleave implementations.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import attrs
import numpy as np

from common import BETAS, EPS, PHASE_LOSSES, WEIGHT_DECAY, Case, Settings, mapping_pairs, student_config, \
    student_state, teacher_config, teacher_state
from workers import HANDWRITTEN, _error, _set_torch_threads, engine_backend, framework_info, gemm_peak, serve

# The recipe's phases (recipes/tinybert_sst2.toml) and what each one trains. "eval" times
# Model.predict on dev for the student and, as the teacher phase's evaluations need, the teacher.
PHASES = ("teacher", "td1", "td2", "eval")
PHASE_TITLES = {"teacher": "teacher fine-tuning", "td1": "TD1", "td2": "TD2", "eval": "evaluation"}
PHASE_LR = {"teacher": 2e-5, "td1": 5e-5, "td2": 3e-5}
PHASE_INDEX = {"teacher": 0, "td1": 1, "td2": 2, "eval": 3}  # seed = run.seed + index, as the runner
RUN_SEED = 42
CLIP, MAX_GRAD_NORM = "per_parameter", 1.0  # the recipe's clipping (every phase)
FINETUNE_LOSSES = (("hard_cross_entropy", 1.0, 1.0),)


@attrs.frozen
class Variant:
    name: str
    impls: tuple[str, ...]
    batching: str  # "fixed" (padded to max_seq_length), "bucketed" (trim to a multiple), "dynamic" (trim to longest)
    cache: bool = False  # teacher outputs precomputed (float16-rounded) and carried in the batch
    precision: str = "fp32"
    compile: bool = False  # torch.compile of the student (standalone experiment)
    phases: tuple[str, ...] = PHASES
    # the torch optimiser kernel (distill_engine_torch.optim.KERNELS); "" the backend's default.
    # The "+loop-opt" twins run the per-tensor update of the engine before #31: the baseline that
    # --optimizer-baseline times beside the default in the same command.
    optimizer: str = ""
    baseline_of: str = ""  # the variant this one is the old-optimiser twin of


VARIANTS = (
    Variant("fixed-64", ("torch", "mindspore"), "fixed"),
    Variant("bucketed", ("torch", "mindspore"), "bucketed"),
    Variant("bucketed+cache", ("torch", "mindspore"), "bucketed", cache=True, phases=("td1", "td2")),
    Variant("bucketed+cache+bf16", ("torch",), "bucketed", cache=True, precision="bf16", phases=("teacher", "td1", "td2")),
    Variant("bucketed+compile", ("torch",), "bucketed", compile=True, phases=("td1", "td2")),
    Variant("dynamic", (HANDWRITTEN,), "dynamic"),
    Variant("fixed-64+loop-opt", ("torch",), "fixed", optimizer="for-loop", phases=("teacher", "td1", "td2"),
            baseline_of="fixed-64"),
    Variant("bucketed+loop-opt", ("torch",), "bucketed", optimizer="for-loop", phases=("teacher", "td1", "td2"),
            baseline_of="bucketed"),
    Variant("bucketed+cache+loop-opt", ("torch",), "bucketed", cache=True, optimizer="for-loop", phases=("td1", "td2"),
            baseline_of="bucketed+cache"),
)
VARIANT = {v.name: v for v in VARIANTS}


@attrs.frozen
class TSettings:
    """One throughput run's parameters (plain data: pickled to the workers)."""

    data_npz: str
    batch_size: int = 32
    eval_batch_size: int = 128  # run.eval_batch_size's default
    max_seq_length: int = 64
    pad_to_multiple_of: int = 16
    batches: int = 4  # K consecutive batches timed per (variant, repetition)
    reps: int = 3
    warmup: int = 2  # extra untimed steps after one step on every batch shape of the plan
    threads: int = 2
    peak_n: int = 2048
    peak_repeats: int = 5
    minilm: str = ""


def _bench_settings(s: TSettings) -> Settings:
    """run.py's Settings, for common's model builders (MiniLM teacher, 4/312 student)."""
    return Settings(teachers=("minilm6",), minilm=s.minilm, batch_size=s.batch_size, length=s.max_seq_length)


def shaped(batch: dict, batching: str, multiple: int) -> dict:
    """A batch as the variant's loop gives it to the model: fixed (as encoded, max_seq_length
    columns), bucketed (the engine's trim_padding to a multiple) or dynamic (cut to the batch's
    longest sentence: Hugging Face's DataCollatorWithPadding without pad_to_multiple_of)."""
    from distill_engine.data import trim_padding

    if batching == "fixed":
        return batch
    return trim_padding(batch, multiple if batching == "bucketed" else 1)


def load_data(path: str):
    from distill_engine.data import EncodedDataset

    z = np.load(path)
    return {split: EncodedDataset(z[f"{split}_input_ids"], z[f"{split}_token_type_ids"], z[f"{split}_attention_mask"],
                                  z[f"{split}_labels"]) for split in ("train", "dev")}


def eval_batches(dev, batching: str, batch_size: int, fill: bool) -> list[np.ndarray]:
    """The runner's evaluation order (Runner.evaluate): file order for fixed batches, length order
    for bucketed; with `fill` the last batch is filled up with repeats of its first row, as the
    runner does so that a compiled backend sees one batch size. The hand-written loop (`fill`
    False) goes through the file in order with a short last batch."""
    from distill_engine.data import batch_order

    order = batch_order(dev, batch_size, shuffle=False, seed=0, batching="bucketed" if batching == "bucketed" else "fixed")
    if fill:
        order = [np.concatenate([r, np.full(batch_size - len(r), r[0])]) for r in order]
    return order


class PhaseWorker:
    """The models, trainers and planned batches of one phase in one implementation."""

    def __init__(self, impl: str, s: TSettings):
        self.impl, self.s = impl, s
        self.bs = _bench_settings(s)
        if impl == HANDWRITTEN:
            import torch

            import handwritten

            self.torch, self.hw = torch, handwritten
            _set_torch_threads(s.threads)
            self.version = f"plain PyTorch loop (torch {torch.__version__})"
        else:
            self.backend, self.device = engine_backend(impl, s.threads)
            self.version = self.backend.version()
        self.data = load_data(s.data_npz)
        self.entries: dict[str, dict] = {}  # variant name -> its trainer or models, batches, cache

    def info(self) -> dict:
        return framework_info(self.version)

    # --- models ----------------------------------------------------------------------------
    def _configs(self, phase: str):
        t_cfg = teacher_config("minilm6", self.bs)
        s_cfg = student_config(Case("td2" if phase == "eval" else phase, "minilm6"), self.bs)
        return t_cfg, s_cfg

    def _load(self, cfg, state):
        if self.impl == HANDWRITTEN:
            return self.hw.load(cfg, state)
        return self.backend.load_model(cfg, state, self.device)

    def _spec(self, graph, phase: str, precision: str):
        from distill_engine.backend import TrainSpec
        from distill_engine.optim import OptimizerSpec

        opt = OptimizerSpec(lr=PHASE_LR[phase], betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, clip=CLIP,
                            max_grad_norm=MAX_GRAD_NORM)
        extra = {}
        if precision != "fp32":
            if "precision" not in attrs.fields_dict(TrainSpec):
                raise NotImplementedError(f"not available: TrainSpec has no 'precision' field on this commit "
                                          f"({precision} training, branch precision, has not landed on main)")
            extra["precision"] = precision
        # a constant rate: the schedule's shape does not change a step's cost
        return TrainSpec(graph=graph, optimizer=opt, learning_rates=np.full(100_000, PHASE_LR[phase], np.float32),
                         seed=RUN_SEED + PHASE_INDEX[phase], **extra)

    def _graph(self, phase: str, s_cfg, t_cfg, mask_padding: bool):
        from distill_engine.graph import build_graph, build_mapping

        if phase == "teacher":
            return build_graph(FINETUNE_LOSSES, t_cfg, None, None, where="teacher")
        mapping = build_mapping("uniform", s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
        return build_graph(PHASE_LOSSES[phase], s_cfg, t_cfg, mapping, where=phase, mask_padding=mask_padding)

    def _engine_trainer(self, phase: str, precision: str, cache: bool, optimizer: str = ""):
        """(trainer, teacher model, graph) built as the runner builds them. A cached phase needs
        mask_padding = true (teacher_cache.usable: only real positions are stored) and gets no
        teacher model at all: the trainer reads the teacher's outputs from the batch."""
        t_cfg, s_cfg = self._configs(phase)
        t_state, _ = teacher_state("minilm6", self.bs)
        graph = self._graph(phase, s_cfg, t_cfg, mask_padding=cache)
        spec = self._spec(graph, phase, precision)
        if phase == "teacher":  # the teacher itself is trained, with no teacher of its own
            return self._trainer(self._load(t_cfg, t_state), None, spec, optimizer), None, graph
        teacher = self._teacher_model(t_cfg, t_state)
        student = self._load(s_cfg, student_state(Case(phase, "minilm6"), self.bs))
        return self._trainer(student, None if cache else teacher, spec, optimizer), teacher, graph

    def _trainer(self, student, teacher, spec, optimizer: str):
        """Backend.trainer, with the torch optimiser kernel `optimizer` when one is named (the torch
        trainer reads it from the environment when it is built)."""
        if not optimizer:
            return self.backend.trainer(student, teacher, spec)
        if self.impl != "torch":
            raise NotImplementedError(f"an optimiser kernel ({optimizer}) is a torch variant, not {self.impl}'s")
        import os

        from distill_engine_torch.optim import KERNEL_ENV

        before = os.environ.get(KERNEL_ENV)
        os.environ[KERNEL_ENV] = optimizer
        try:
            trainer = self.backend.trainer(student, teacher, spec)
        finally:
            if before is None:
                del os.environ[KERNEL_ENV]
            else:
                os.environ[KERNEL_ENV] = before
        if getattr(trainer, "kernel", optimizer) != optimizer:
            raise NotImplementedError(f"the torch trainer did not take the optimiser kernel {optimizer} "
                                      f"(it runs {trainer.kernel})")
        return trainer

    def _teacher_model(self, t_cfg, t_state):
        if getattr(self, "_teacher", None) is None:
            self._teacher = self._load(t_cfg, t_state)  # frozen: one copy serves every trainer of the phase
        return self._teacher

    # --- setup -----------------------------------------------------------------------------
    def setup(self, phase: str, variants: list[str], plan: dict) -> dict:
        """Build every variant of `phase`; returns {variant: {"ok", "error"?, "warmup": ...}}."""
        self.phase, self.plan = phase, plan
        out = {}
        shared = {}  # (precision, compile, cache) -> trainer: fixed-64 and bucketed batches share one
        for name in variants:
            v = VARIANT[name]
            res: dict = {}
            try:
                start = time.perf_counter()
                entry = self._build_variant(phase, v, shared)
                res["build_s"] = time.perf_counter() - start
                res.update(self._prepare(phase, v, entry))
                self.entries[name] = entry
                res["ok"] = True
            except Exception as exc:  # one broken variant must not hide the others
                res.update(_error(exc), ok=False)
            out[name] = res
        return out

    def _build_variant(self, phase: str, v: Variant, shared: dict) -> dict:
        if self.impl == HANDWRITTEN:
            return self._build_handwritten(phase)
        if phase == "eval":
            t_cfg, s_cfg = self._configs(phase)
            t_state, _ = teacher_state("minilm6", self.bs)
            if "models" not in shared:
                shared["models"] = {"student": self._load(s_cfg, student_state(Case("td2", "minilm6"), self.bs)),
                                    "teacher": self._teacher_model(t_cfg, t_state)}
            return {"models": shared["models"]}
        key = (v.precision, v.compile, v.cache and phase != "teacher", v.optimizer)
        if key not in shared:
            trainer, teacher, graph = self._engine_trainer(phase, v.precision, key[2], v.optimizer)
            compile_s = None
            if v.compile:
                import torch

                # The student module inside the engine's TorchTrainer is swapped for its compiled
                # form (parameters shared, so the trainer's AdamW still updates them): the loss
                # terms and the teacher stay eager. dynamic=True: one graph for every length.
                start = time.perf_counter()
                trainer.student.module = torch.compile(trainer.student.module, dynamic=True)
                compile_s = time.perf_counter() - start
            shared[key] = {"trainer": trainer, "teacher": teacher, "graph": graph, "wrap_s": compile_s}
        return dict(shared[key])

    def _build_handwritten(self, phase: str) -> dict:
        t_cfg, s_cfg = self._configs(phase)
        t_state, _ = teacher_state("minilm6", self.bs)
        if phase == "eval":
            return {"models": {"student": self.hw.load(s_cfg, student_state(Case("td2", "minilm6"), self.bs)),
                               "teacher": self.hw.load(t_cfg, t_state)}}
        if phase == "teacher":
            model = self.hw.load(t_cfg, t_state)
            trainer = self.hw.HandwrittenTrainer(model, None, "finetune", lr=PHASE_LR[phase], weight_decay=WEIGHT_DECAY,
                                                 max_grad_norm=MAX_GRAD_NORM)
        else:
            student = self.hw.load(s_cfg, student_state(Case(phase, "minilm6"), self.bs))
            trainer = self.hw.HandwrittenTrainer(
                student, self.hw.load(t_cfg, t_state), "prediction" if phase == "td2" else "intermediate",
                mapping_pairs(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers), lr=PHASE_LR[phase],
                weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM, seed=RUN_SEED + PHASE_INDEX[phase])
        return {"trainer": trainer}

    def _rep_batches(self, phase: str, v: Variant, rep: int) -> list[dict]:
        split = "dev" if phase == "eval" else "train"
        data = self.data[split]
        rows = self.plan["reps"][rep]["fixed" if v.batching == "dynamic" else v.batching]
        return [(shaped(data.batch(r), v.batching, self.s.pad_to_multiple_of), r) for r in rows]

    def _prepare(self, phase: str, v: Variant, entry: dict) -> dict:
        """Form the variant's batches for every repetition, precompute the teacher cache, warm up on
        every batch shape (first step of each shape timed: compilation), check the cache."""
        res: dict = {}
        if phase == "eval":
            # evaluation: one pass over dev per repetition, the same batches each time
            fill = self.impl != HANDWRITTEN
            order = eval_batches(self.data["dev"], "fixed" if v.batching == "dynamic" else v.batching,
                                 self.s.eval_batch_size, fill)
            dev = self.data["dev"]
            entry["eval"] = [shaped(dev.batch(r), v.batching, self.s.pad_to_multiple_of) for r in order]
            first = {}
            for which in ("student", "teacher"):
                for b in entry["eval"]:
                    shape = b["input_ids"].shape
                    start = time.perf_counter()
                    self._predict(entry["models"][which], b)
                    first.setdefault(which, {}).setdefault(str(shape), time.perf_counter() - start)
            res["first_step_s"] = first
            return res
        entry["batches"] = {rep: self._rep_batches(phase, v, rep) for rep in range(len(self.plan["reps"]))}
        if v.cache and phase != "teacher":  # fine-tuning has no frozen teacher to cache
            res.update(self._precompute(entry))
        shapes: dict[str, float] = {}
        seen = set()
        step = self._step_fn(entry)
        # A compiling implementation builds a graph per batch shape, so every shape of the plan runs
        # once before timing; eager torch has nothing to build per shape, one step is its warm-up.
        per_shape = self.impl == "mindspore" or v.compile
        for rep_batches in entry["batches"].values():
            for b, r in rep_batches:
                shape = tuple(b["input_ids"].shape)
                if shape in seen or (seen and not per_shape):
                    continue
                seen.add(shape)
                start = time.perf_counter()
                step(b, r)
                shapes[str(shape)] = time.perf_counter() - start
        for _ in range(self.s.warmup):
            step(*entry["batches"][0][0])
        res["first_step_s"] = shapes  # per batch shape: compilation (MindSpore, torch.compile) + one step
        if v.compile:
            from torch._dynamo.utils import counters

            res["compiled_frames"] = dict(counters["frames"])  # graphs dynamo compiled (recompilations included)
        if entry.get("wrap_s") is not None:
            res["compile_wrap_s"] = entry["wrap_s"]
        return res

    def _precompute(self, entry: dict) -> dict:
        """The engine's teacher-output cache (distill_engine.teacher_cache, float16 shards of each
        row's real positions) built over the rows this run times, as a phase with teacher_cache =
        "auto" builds it over its dataset: the teacher's forward in length-sorted chunks
        (Model.forward, as Runner.teacher_cache). Built twice into fresh directories, the second
        build timed: the pre-pass rate without the first build's one-off graph compilations. A
        timed step then reads its batch's outputs from the cache (TeacherCache.outputs), as the
        training loop does."""
        import tempfile

        from distill_engine import teacher_cache

        graph, teacher = entry["graph"], entry["teacher"]
        rows = np.unique(np.concatenate([r for bs in entry["batches"].values() for _, r in bs]))
        subset = self.data["train"].take(rows)
        t_cfg, _ = self._configs(self.phase)
        t_state, _ = teacher_state("minilm6", self.bs)
        key = teacher_cache.cache_key(t_cfg, t_state, subset, graph.teacher_taps, "float16")
        root = Path(tempfile.mkdtemp(prefix="distill-throughput-cache-"))
        entry["cache_root"] = root
        seconds = []
        for attempt in ("warm", "timed"):
            start = time.perf_counter()
            cache, _ = teacher_cache.build_or_open(root / attempt, key, subset, t_cfg, lambda b: teacher.forward(b).named(),
                                                   backend=self.impl, progress=False, say=lambda _msg: None)
            seconds.append(time.perf_counter() - start)
        entry["cache"] = cache
        entry["local"] = {int(g): i for i, g in enumerate(rows)}  # dataset row -> row of the cached subset
        return {"prepass_s_per_batch": seconds[1] / len(rows) * self.s.batch_size, "prepass_rows_per_s": len(rows) / seconds[1],
                "prepass_first_build_s": seconds[0], "prepass_rows": int(len(rows)), "prepass_taps": list(graph.teacher_taps),
                "cache_bytes": int(cache.manifest["bytes"])}

    def _step_fn(self, entry: dict):
        step = entry["trainer"].step
        if "cache" not in entry:
            return lambda batch, _rows: step(batch)
        cache, local = entry["cache"], entry["local"]

        def cached_step(batch, rows):
            # the training loop's order: the batch, then its teacher outputs from the cache, then the step
            full = dict(batch)
            full.update(cache.outputs(np.array([local[int(r)] for r in rows]), batch["input_ids"].shape[1]))
            return step(full)

        return cached_step

    def _predict(self, model, batch):
        if self.impl == HANDWRITTEN:
            return self.hw.predict(model, batch)
        return model.predict(batch)

    def cleanup(self) -> None:
        """Delete the cache directories this worker built."""
        for entry in self.entries.values():
            if entry.get("cache_root"):
                shutil.rmtree(entry["cache_root"], ignore_errors=True)

    # --- timing ----------------------------------------------------------------------------
    def time(self, variant: str, rep: int, model: str = "student") -> dict:
        entry = self.entries[variant]
        cpu0 = time.process_time()
        times = []
        if "eval" in entry:
            m = entry["models"][model]
            start = time.perf_counter()
            for b in entry["eval"]:
                self._predict(m, b)
            times.append(time.perf_counter() - start)  # one dev pass
        else:
            step = self._step_fn(entry)
            for b, rows in entry["batches"][rep]:
                start = time.perf_counter()
                step(b, rows)
                times.append(time.perf_counter() - start)
        wall = sum(times)
        return {"times": times, "cores_busy": (time.process_time() - cpu0) / max(wall, 1e-9)}


def worker_main(conn, impl: str, settings: TSettings, log_path: str | None) -> None:
    """Serve throughput.py's commands over `conn` until "exit"."""

    def handle(worker: PhaseWorker, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "setup":
            return {"ok": True, "variants": worker.setup(msg["phase"], msg["variants"], msg["plan"])}
        if cmd == "time":
            return {"ok": True, **worker.time(msg["variant"], msg["rep"], msg.get("model", "student"))}
        if cmd == "peak":
            return {"ok": True, **gemm_peak(msg["n"], msg["repeats"])}
        return {"ok": False, "error": f"unknown command {cmd}"}

    serve(conn, log_path, settings.threads, lambda: PhaseWorker(impl, settings), handle)
