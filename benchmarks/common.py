"""What is benchmarked, shared by the coordinator and the workers: shapes, cases, batches, FLOPs.

Imports no framework: the coordinator (run.py) stays free of thread pools and allocators, and
every framework lives in its own worker process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import signal
import statistics
import threading
import time
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BertConfig

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"

VOCAB = 30522
NUM_LABELS = 2
LR = 5e-5
WEIGHT_DECAY = 0.01
# The engine's default clipping for every phase (recipe.schema.OptimizerConfig.clip): the
# PyTorch original's per-tensor gradient-norm clipping at 1.0.
CLIP = "per_parameter"
MAX_GRAD_NORM = 1.0
BETAS = (0.9, 0.999)
EPS = 1e-6
STUDENT_SEED = 2
TEACHER_SEED = 1
DATA_SEED = 0

PHASES = ("gd", "td1", "td2", "eval")
PHASE_TITLES = {"gd": "GD step", "td1": "TD1 step", "td2": "TD2 step", "eval": "evaluation"}
# (kind, weight, temperature) as the recipes resolve them
PHASE_LOSSES = {
    "gd": (("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)),
    "td1": (("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)),
    "td2": (("soft_cross_entropy", 1.0, 1.0),),
    "eval": (),
}

TEACHERS = {
    # name: (layers, hidden, heads, intermediate, description)
    "minilm6": (6, 384, 12, 1536, "MiniLM-L6-H384 (6/384)"),
    "base12": (12, 768, 12, 3072, "BERT-base shape (12/768, random)"),
}
STUDENT_SHAPE = (4, 312, 12, 1200)


@attrs.frozen
class Settings:
    """One benchmark run's parameters (plain data: crosses process boundaries by pickling)."""

    batch_size: int = 32
    length: int = 128
    teachers: tuple[str, ...] = ("minilm6", "base12")
    phases: tuple[str, ...] = PHASES
    warmup: int = 5  # MindSpore reaches its steady step time after ~5 steps (measured on TD1)
    steps: int = 1  # timed steps per (implementation, case) per repetition
    reps: int = 5
    threads: int = 2
    check: bool = True  # compare each implementation's no-dropout objective with the hand-written one
    minilm: str = str(MINILM)
    peak_n: int = 2048
    peak_repeats: int = 5
    num_batches: int = 4  # distinct batches cycled through


@attrs.frozen
class Case:
    """One measured unit: a phase with a teacher (the evaluation case has none)."""

    phase: str
    teacher: str | None

    @property
    def key(self) -> str:
        return self.phase if self.teacher is None else f"{self.phase}/{self.teacher}"

    @property
    def trains(self) -> bool:
        return self.phase != "eval"


def cases(settings: Settings) -> list[Case]:
    out = []
    for teacher in settings.teachers:
        for phase in settings.phases:
            if phase != "eval":
                out.append(Case(phase, teacher))
    if "eval" in settings.phases:
        out.append(Case("eval", None))  # the student alone: independent of the teacher
    return out


def case_from_key(key: str) -> Case:
    phase, _, teacher = key.partition("/")
    return Case(phase, teacher or None)


def teacher_config(name: str, settings: Settings) -> BertConfig:
    """The teacher, always with a classification head (fine-tuned teacher of TD1/TD2). The head is
    never computed in GD/TD1: both skip the pooler and head when no loss reads logits."""
    if name == "minilm6" and Path(settings.minilm, "config.json").is_file():
        cfg = BertConfig.from_hf_config(Path(settings.minilm) / "config.json")
        return attrs.evolve(cfg, num_labels=NUM_LABELS)
    layers, hidden, heads, inter, _ = TEACHERS[name]
    return BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=inter, num_labels=NUM_LABELS)


def teacher_state(name: str, settings: Settings) -> tuple[dict[str, np.ndarray], str]:
    """(state, source): the real MiniLM weights when ../shared has them (plus a fresh head), else random."""
    from distill_engine.bert import init_parameters, parameter_shapes

    cfg = teacher_config(name, settings)
    if name == "minilm6" and Path(settings.minilm, "config.json").is_file():
        from distill_engine.checkpoint import load_huggingface

        ckpt = load_huggingface(Path(settings.minilm))
        state = dict(ckpt.state)
        missing = set(parameter_shapes(cfg)) - set(state)  # the classification head
        state.update(init_parameters(cfg, TEACHER_SEED, only=missing))
        return state, f"pre-trained {settings.minilm} (+ random head)"
    return init_parameters(cfg, TEACHER_SEED), "random init"


def student_config(case: Case, settings: Settings) -> BertConfig:
    """4/312/12/1200 with the shared TinyBERT projection to the teacher's width; a 2-label head from
    TD1 on. The evaluation student is the TD2 student of the first teacher."""
    layers, hidden, heads, inter = STUDENT_SHAPE
    teacher = case.teacher or settings.teachers[0]
    return BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=inter, num_labels=0 if case.phase == "gd" else NUM_LABELS,
                      projection="shared", projection_dim=teacher_config(teacher, settings).hidden_size)


def student_state(case: Case, settings: Settings) -> dict[str, np.ndarray]:
    from distill_engine.bert import init_parameters

    return init_parameters(student_config(case, settings), STUDENT_SEED)


def mapping_pairs(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    from distill_engine.graph import uniform_layers

    return uniform_layers(student_layers, teacher_layers)


def batches(case: Case, settings: Settings, count: int | None = None, seed: int = DATA_SEED) -> list[dict]:
    """Token batches of the benchmark shape. GD batches are full packed sequences (mask all ones);
    task batches have random lengths in [L/2, L] padded to L (same compute, masked positions)."""
    rng = np.random.default_rng([seed, PHASES.index(case.phase)])
    b, length = settings.batch_size, settings.length
    out = []
    for _ in range(count or settings.num_batches):
        ids = rng.integers(1000, VOCAB, (b, length)).astype(np.int32)
        ids[:, 0] = 101  # [CLS]
        mask = np.ones((b, length), np.int32)
        if case.phase != "gd":
            lengths = rng.integers(length // 2, length + 1, b)
            mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
            ids = np.where(mask == 1, ids, 0).astype(np.int32)
        batch = {"input_ids": ids, "token_type_ids": np.zeros((b, length), np.int32), "attention_mask": mask}
        if case.phase != "gd":
            batch["labels"] = rng.integers(0, NUM_LABELS, b).astype(np.int32)
        out.append(batch)
    return out


# ---------------------------------------------------------------------------------------------
# FLOPs


def encoder_forward_flops(c: BertConfig, batch: int, length: int, *, pooler: bool) -> int:
    """Matrix-multiply FLOPs of one BERT forward, counting 2*M*N*K per GEMM.

    With T = batch*length tokens, H the width, I the intermediate size, per layer:
      Q, K, V projections    3 * 2*T*H*H
      scores  Q K^T          2*batch*heads*L*L*d_head = 2*T*L*H
      context P V            2*T*L*H
      attention output       2*T*H*H
      feed-forward           2*T*H*I + 2*T*I*H
    and, when `pooler` (the logits are needed): pooler 2*batch*H*H, classifier 2*batch*H*C.
    Embedding lookups, LayerNorm, softmax, GELU, dropout and losses are not GEMMs and are not
    counted (they are a few per cent of the work at these shapes).
    """
    t, h, i = batch * length, c.hidden_size, c.intermediate_size
    per_layer = 3 * 2 * t * h * h + 2 * (2 * t * length * h) + 2 * t * h * h + 2 * (2 * t * h * i)
    total = c.num_hidden_layers * per_layer
    if pooler:
        total += 2 * batch * h * h + (2 * batch * h * c.num_labels if c.num_labels else 0)
    return total


def step_flops(phase: str, student: BertConfig, teacher: BertConfig | None, batch: int, length: int) -> dict:
    """Matrix-multiply FLOPs of one step of `phase`, analytically.

    - GD / TD1: teacher forward without pooler (no loss reads logits); student forward without
      pooler plus the TinyBERT projection fit_dense (H_S -> H_T) of every compared hidden-state
      entry (the embedding output and the M student layers: (M+1) * 2*T*H_S*H_T); student
      backward = 2 x its forward (every GEMM needs the gradient of both operands: weights and
      activations, and the first layer's input gradient flows into the trainable embeddings).
    - TD2: teacher and student forward with pooler and classifier, no projection; student
      backward = 2 x forward.
    - eval: student forward with pooler and classifier (no backward, no teacher).
    The teacher is only ever run forward (inference mode, no gradient).
    """
    logits = phase in ("td2", "eval")
    s_fwd = encoder_forward_flops(student, batch, length, pooler=logits)
    if phase in ("gd", "td1"):
        s_fwd += (student.num_hidden_layers + 1) * 2 * batch * length * student.hidden_size * student.projection_dim
    t_fwd = encoder_forward_flops(teacher, batch, length, pooler=logits) if (teacher and phase != "eval") else 0
    s_bwd = 2 * s_fwd if phase != "eval" else 0
    return {"student_forward": s_fwd, "student_backward": s_bwd, "teacher_forward": t_fwd,
            "total": s_fwd + s_bwd + t_fwd}


def sequence_flops(phase: str, model: BertConfig, teacher: BertConfig | None, lengths) -> dict:
    """`step_flops` of a batch whose sequences have their own lengths `lengths` (the real tokens
    only, not the padding): the sum over sequences of one-sequence steps, so each sequence's
    attention is quadratic in its own length. The pooler and classifier count once per sequence,
    as in `step_flops`. `teacher` None leaves the teacher's forward out (a phase that has none, or
    whose teacher outputs come precomputed in the batch); the teacher's own fine-tuning is
    `sequence_flops("td2", teacher_config, None, ...)`: forward with the head, backward 2x."""
    values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
    total = dict.fromkeys(("student_forward", "student_backward", "teacher_forward", "total"), 0)
    for length, count in zip(values.tolist(), counts.tolist()):
        for key, value in step_flops(phase, model, teacher, 1, length).items():
            total[key] += count * value
    return total

# ---------------------------------------------------------------------------------------------
# Coordinator plumbing shared by run.py and throughput.py: worker processes over pipes, a resident
# memory watchdog, machine facts. No framework is imported here either.

CTX = mp.get_context("spawn")  # fresh interpreters: no framework state inherited from the coordinator


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class RssWatchdog(threading.Thread):
    """Kills a watched process whose resident memory passes `cap_mb`, so that a backend that needs
    more memory than the (shared) machine can give fails with a clear error instead of making the
    kernel's OOM killer pick a victim. Also records each process's largest RSS seen."""

    def __init__(self, cap_mb: float, interval: float = 0.25):
        super().__init__(daemon=True)
        self.cap_mb, self.interval = cap_mb, interval
        self.watched: dict[int, str] = {}
        self.killed: dict[int, str] = {}
        self.peak_mb: dict[int, float] = {}
        self.lock = threading.Lock()

    def watch(self, pid: int, label: str) -> None:
        with self.lock:
            self.watched[pid] = label

    def unwatch(self, pid: int) -> None:
        with self.lock:
            self.watched.pop(pid, None)

    def run(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while True:
            with self.lock:
                items = list(self.watched.items())
            for pid, label in items:
                try:
                    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_mb
                except (OSError, IndexError, ValueError):
                    continue
                self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), rss)
                if rss > self.cap_mb and pid not in self.killed:
                    self.killed[pid] = (f"{label} stopped by the benchmark at {rss / 1024:.2f} GiB resident, over the "
                                        f"cap of {self.cap_mb / 1024:.2f} GiB (--max-rss-gb)")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(self.interval)

    def reason(self, pid: int | None, exitcode) -> str:
        if pid in self.killed:
            return self.killed[pid]
        if exitcode == -signal.SIGKILL:
            return "worker process was killed (SIGKILL; out of memory?)"
        return f"worker process died (exit code {exitcode})"


WATCHDOG: RssWatchdog | None = None


def start_watchdog(cap_mb: float) -> RssWatchdog:
    """Start the one watchdog of this coordinator; every Worker started afterwards is watched."""
    global WATCHDOG
    WATCHDOG = RssWatchdog(cap_mb)
    WATCHDOG.start()
    return WATCHDOG


class Worker:
    """A long-lived worker process for one implementation, spoken to over a pipe.

    `target(conn, *args, log_path)` runs in a fresh (spawned) interpreter and answers one message
    with one message; its first message is the hello (`{"ok": ..., "info": ...}`)."""

    def __init__(self, name: str, target, args: tuple, log_path: Path):
        self.name = name
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, *args, str(log_path)), daemon=True)
        self.proc.start()
        child.close()
        if WATCHDOG is not None:
            WATCHDOG.watch(self.proc.pid, f"{name} worker")
        self._hello = None

    @property
    def hello(self) -> dict:
        if self._hello is None:
            self._hello = self._recv()
        return self._hello

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) this worker has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def _recv(self) -> dict:
        try:
            return self.conn.recv()
        except (EOFError, ConnectionError):
            self.proc.join(5)
            why = WATCHDOG.reason(self.proc.pid, self.proc.exitcode) if WATCHDOG else \
                f"worker process died (exit code {self.proc.exitcode})"
            return {"ok": False, "error": why}

    def call(self, **msg) -> dict:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            return {"ok": False, "error": f"worker process is gone (exit code {self.proc.exitcode})"}
        return self._recv()

    def close(self) -> dict:
        res = self.call(cmd="exit") if self.proc.is_alive() else {}
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
        if WATCHDOG is not None:
            WATCHDOG.unwatch(self.proc.pid)
        return res


def discover_backends(wanted: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Installed backends except "numpy" (forward-only reference), restricted to `wanted`."""
    from distill_engine import plugins

    skipped = {}
    names = [n for n in plugins.backend_registry() if n != "numpy"]
    if wanted is not None:
        for n in wanted:
            if n not in names:
                skipped[n] = "not installed (not in distill_engine.plugins.backend_registry())"
        names = [n for n in names if n in wanted]
    return names, skipped


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _mem_total_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 16.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fresh_log_dir(out: Path) -> Path:
    """`out`/logs, created, without the logs of an earlier run."""
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    return log_dir


def prune_logs(log_dir: Path) -> None:
    """Keep only the workers' logs that say something (and the folder only if one does)."""
    if not log_dir.is_dir():
        return
    for log in log_dir.glob("*.log"):
        if log.stat().st_size == 0:
            log.unlink()
    if not any(log_dir.iterdir()):
        log_dir.rmdir()
