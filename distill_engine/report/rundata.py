"""Reading a run directory for its report: run.json, recipe.json, summary.json and metrics.jsonl as
they are, and which checkpoints are the run's teacher and student.

Nothing here needs a backend or the run's input files: a run directory copied to another machine
reports the same. An interrupted or resumed run gives what it has: its finished phases, the steps
logged of the phase it stopped in, and the checkpoints handed on so far.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from distill_engine.checkpoint import MANIFEST
from distill_engine.metrics_log import read_records, record_values
from distill_engine.rundir import RUN_FILE, STATE_DIR, RunDirError
from distill_engine.runstate import StateStore
from distill_engine.tasks.classes import ClassCounts

# records that open a stretch of the log written by one process: the time before them (planning,
# or the pause between an interruption and its resume) belongs to no phase
SEGMENT_STARTS = ("start", "resume")


@attrs.frozen
class PhaseRecord:
    """One phase of the recipe as the run's log tells it."""

    name: str
    kind: str
    status: str  # "finished", "unfinished" (started, no phase_end: interrupted or still running), "not run"
    steps: int  # the phase's steps (phase_end's), or the last step it logged
    offset: int  # the run's global step before the phase: the steps of the phases before it
    wall_s: float  # wall-clock seconds between its records (pauses between attempts excluded)
    dev: dict | None  # phase_end's dev metrics (with best_<metric> and best_step when the best was kept)
    shapes: int | None  # distinct training batch shapes (phase_end)
    target: str = "student"  # what an evaluate phase scores
    # the confusion matrix of the evaluation of what the phase handed on (phase_end's "classes";
    # for a best kept before run states recorded it, the eval record at best_step); None for a
    # regression task, a phase not evaluated, or a run older than the record
    classes: ClassCounts | None = None
    early_stop: dict | None = None  # the "early_stop" record when early stopping ended the phase

    @property
    def model(self) -> str:
        """Which model the phase's dev metrics score."""
        return "teacher" if self.kind == "teacher_finetune" or (self.kind == "evaluate" and self.target == "teacher") \
            else "student"

    @property
    def metric_names(self) -> list[str]:
        """The task's metrics, in order (the first ranks checkpoints), as the phase's dev names them."""
        return [k for k in self.dev or {} if not k.startswith("best_") and k != "best_step"]


@attrs.frozen
class Evaluation:
    phase: str
    step: int  # within the phase
    global_step: int
    metrics: dict[str, float]


@attrs.frozen
class ModelRef:
    """The teacher or the student of a run: which checkpoint, and its dev metrics as measured."""

    role: str  # "teacher" | "student"
    label: str  # "td2/best", or the given teacher's path
    path: Path
    format: str  # checkpoint format (checkpoint.load_any)
    dev: dict | None
    dev_from: str  # where `dev` was measured, e.g. "td2/best (step 20)"


@attrs.frozen(eq=False)
class RunData:
    path: Path
    info: dict  # run.json ({} when absent)
    recipe: dict | None  # recipe.json's resolved recipe
    summary: list  # summary.json ([] until the run finishes)
    records: list[dict]
    damaged_lines: int
    phases: tuple[PhaseRecord, ...]
    evaluations: tuple[Evaluation, ...]
    unattributed_s: float  # wall time logged outside any phase (e.g. data augmentation)
    teacher: ModelRef | None
    student: ModelRef | None

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    @property
    def backend(self) -> str | None:
        return self.info.get("backend") or next((r.get("backend") for r in self.records if r["event"] == "start"), None)

    def phase(self, name: str) -> PhaseRecord:
        return next(p for p in self.phases if p.name == name)

    def train_series(self, phase: str) -> dict[str, tuple[list[int], list[float]]]:
        """{value name: (steps, values)} of the phase's train records: each loss term, total, lr."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        for record in self.records:
            if record["event"] != "train" or record.get("phase") != phase or not isinstance(record.get("step"), int):
                continue
            for name, value in record_values(record).items():
                steps, values = out.setdefault(name, ([], []))
                steps.append(record["step"])
                values.append(value)
        return out


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: damaged ({exc})") from None


def read_run(path: Path) -> RunData:
    """Read the run in `path`; a directory that holds no run is a RunDirError naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    metrics = path / "metrics.jsonl"
    info = _read_json(path / RUN_FILE)
    if info is None and not metrics.is_file():
        raise RunDirError(f"{path} holds no distill-engine run (no {RUN_FILE} or metrics.jsonl); give the run's "
                          "output directory (run.output_dir)")
    recipe_doc = _read_json(path / "recipe.json")
    recipe = recipe_doc.get("recipe") if isinstance(recipe_doc, dict) else None
    summary = _read_json(path / "summary.json") or []
    records, damaged = read_records(metrics) if metrics.is_file() else ([], 0)
    wall, unattributed = _wall_times(records)
    phases = _phases(recipe, records, wall)
    offsets = {p.name: p.offset for p in phases}
    evaluations = tuple(Evaluation(r["phase"], r["step"], offsets.get(r["phase"], 0) + r["step"], record_values(r))
                        for r in records
                        if r["event"] == "eval" and r.get("phase") in offsets and isinstance(r.get("step"), int))
    info = info or {}
    handed = _handed(path, phases)
    teacher = _teacher(path, recipe, phases, handed.get("teacher"))
    student = _model(path, "student", handed.get("student"))
    return RunData(path, info, recipe, summary if isinstance(summary, list) else [], records, damaged, tuple(phases),
                   evaluations, unattributed, teacher, student)


def _wall_times(records: list[dict]) -> tuple[dict[str, float], float]:
    """Seconds per phase: the time from each record to the next one, given to the later record's
    phase, within each stretch the log got from one process (from a start or resume record on).
    Records moved by a resume (an earlier attempt's interruption) keep their order and times."""
    per_phase: dict[str, float] = {}
    other = 0.0
    previous = None
    for record in records:
        when = record.get("time")
        if not isinstance(when, (int, float)):
            continue
        if record["event"] in SEGMENT_STARTS or previous is None:
            previous = when
            continue
        gap = max(0.0, when - previous)
        previous = when
        if record.get("phase"):
            per_phase[record["phase"]] = per_phase.get(record["phase"], 0.0) + gap
        else:
            other += gap
    return per_phase, other


def _phases(recipe: dict | None, records: list[dict], wall: dict[str, float]) -> list[PhaseRecord]:
    specs = [(p["name"], p.get("kind", "?"), p.get("target", "student")) for p in (recipe or {}).get("phases", [])]
    known = {name for name, _, _ in specs}
    for record in records:  # a run without recipe.json: the phases its log names, in order
        name = record.get("phase")
        if name and name not in known and record["event"] in ("train", "eval", "phase_end"):
            specs.append((name, record.get("kind", "?"), "student"))
            known.add(name)
    out, offset = [], 0
    for name, kind, target in specs:
        mine = [r for r in records if r.get("phase") == name]
        end = next((r for r in reversed(mine) if r["event"] == "phase_end"), None)
        logged = [r["step"] for r in mine if r["event"] in ("train", "eval") and isinstance(r.get("step"), int)]
        if end is not None:
            status, steps = "finished", int(end.get("steps") or 0)
        else:
            status, steps = ("unfinished" if mine else "not run"), max(logged, default=0)
        stopped = next((r for r in reversed(mine) if r["event"] == "early_stop"), None)
        out.append(PhaseRecord(name, end.get("kind", kind) if end else kind, status, steps, offset,
                               round(wall.get(name, 0.0), 3), end.get("dev") if end else None,
                               end.get("shapes") if end else None, target, _classes(end, mine), stopped))
        offset += steps
    return out


def _classes(end: dict | None, mine: list[dict]) -> ClassCounts | None:
    if end is None:
        return None
    counts = ClassCounts.from_record(end.get("classes"))
    best = (end.get("dev") or {}).get("best_step")
    if counts is None and isinstance(best, int):  # a resumed phase's best: its eval record has them
        at = [r for r in mine if r["event"] == "eval" and r.get("step") == best and "classes" in r]
        counts = ClassCounts.from_record(at[-1]["classes"]) if at else None
    return counts


def _handed(path: Path, phases: list[PhaseRecord]) -> dict:
    """{"teacher": "teacher/best", "student": "td2/best", ...}: what the newest run state says the
    phases handed on; without run states, what the finished phases' logs imply."""
    saved = StateStore(path / STATE_DIR, keep=1).latest()
    if saved is not None and isinstance(saved.doc.get("handed"), dict):
        return saved.doc["handed"]
    handed: dict = {}
    for phase in phases:
        if phase.status != "finished" or phase.kind == "evaluate":
            continue
        kept = "best" if any(k.startswith("best_") for k in phase.dev or {}) else "final"
        handed["teacher" if phase.kind == "teacher_finetune" else "student"] = f"{phase.name}/{kept}"
    return handed


def _model(path: Path, role: str, key: str | None) -> ModelRef | None:
    if not key or not (path / key / MANIFEST).is_file():
        return None
    manifest = _read_json(path / key / MANIFEST) or {}
    dev = manifest.get("metrics") or None
    step = manifest.get("step")
    return ModelRef(role, key, path / key, "neutral", dev, f"{key}" + (f" (step {step})" if step is not None else ""))


def _teacher(path: Path, recipe: dict | None, phases: list[PhaseRecord], key: str | None) -> ModelRef | None:
    """The fine-tuned teacher the run handed on, else the teacher the recipe gives (scored by an
    evaluate phase with target "teacher", when the recipe has one)."""
    tuned = _model(path, "teacher", key)
    if tuned is not None:
        return tuned
    given = (recipe or {}).get("teacher") or {}
    if not given.get("path"):
        return None
    scored = next((p for p in phases if p.kind == "evaluate" and p.target == "teacher" and p.dev), None)
    return ModelRef("teacher", "teacher.path", Path(given["path"]), given.get("format", "huggingface"),
                    scored.dev if scored else None, f"phase {scored.name}" if scored else "")
