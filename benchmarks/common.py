"""What is benchmarked, shared by the coordinator and the workers: shapes, cases, batches, FLOPs.

Imports no framework: the coordinator (run.py) stays free of thread pools and allocators, and
every framework lives in its own worker process.
"""

from __future__ import annotations

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
