"""The neutral runner: walks a planned recipe's phases, hands weights on, resumes, logs.

`distill_engine.planning.plan()` resolves and checks everything first; `Runner.run()` then opens
the run directory (`rundir`), starts or resumes the run (`runstate`, `fingerprint`), and executes
the phases; one training phase's loop is `training.PhaseTraining`. Backends only ever see one
phase's models and steps.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

from distill_engine import teacher_cache
from distill_engine.augment.job import AugmentStopped, run_job
from distill_engine.augment.recipe import AUGMENTED_SPLIT
from distill_engine.backend import release_caches
from distill_engine.models.registry import family_of, init_parameters
from distill_engine.checkpoint import check_tensors, load_neutral
from distill_engine.data import EncodedDataset, batch_order, pack_corpus, read_corpus_documents, trim_padding
from distill_engine.distributed import NPROC_ENV, RankFailed, any_rank, barrier
from distill_engine.errors import DistillError
from distill_engine.fingerprint import differences, fingerprint, input_digests
from distill_engine.graph.taps import per_position_logits
from distill_engine.interrupt import RunInterrupted, StopRequests
from distill_engine.progress import DEFAULT_EVERY_S
from distill_engine.planning import FRESH_PREFIXES, PhasePlan, Plan, plan  # noqa: F401  (plan: re-exported for callers)
from distill_engine.recipe import recipe_to_dict
from distill_engine.io import write_json_atomically
from distill_engine.rundir import CLI_WORDS, STATE_DIR, ModeWords, RunDirectory, RunDirError
from distill_engine.runstate import SavedState, StateStore
from distill_engine.tasks.base import capped_examples
from distill_engine.tasks.classes import DevMetrics, classes_of, warnings as degenerate
from distill_engine.tensorboard_log import TENSORBOARD_DIR
from distill_engine.training import DivergenceError, PhaseContext, PhaseTraining, check_weights

RUN_FORMAT = "distill-engine-run"
# metrics.jsonl records about the run's life rather than its steps: a resume keeps them all
LIFECYCLE_EVENTS = ("resume", "interrupted", "failed")


def _records(text: str) -> list[dict]:
    """The whole JSON records in a log's text (a kill may have cut the last one short)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _complete_state(config, state: dict[str, np.ndarray], seed: int, source: str) -> dict[str, np.ndarray]:
    """Check a loaded state against `config`, initialising a missing head or projection."""
    missing = check_tensors(config, state, source, allow_missing=FRESH_PREFIXES)
    if not missing:
        return state
    return {**state, **init_parameters(config, seed, only=set(missing))}


# An evaluate phase of the student writes data.test's predictions here (GLUE's submission format).
TEST_PREDICTIONS = "test_predictions.tsv"

class Runner:
    """Executes a `Plan`: one phase after another, handing weights on, logging as it goes.

    `mode` is "new" (the output directory must be empty or absent), "resume" (continue the run
    there from its last complete state; start it if there is none) or "overwrite" (replace the
    run there). `command` is the command line that started this process, from which the
    interruption message builds the command that resumes.

    In a data-parallel run (`plan.group`, see `distill_engine.distributed`) every rank runs a
    Runner; rank 0 (the primary) alone opens and writes the run directory, logs and prints, the
    others follow the state it chose and compute the same steps on their share of each batch.
    """

    def __init__(self, plan: Plan, *, out: TextIO | None = None, progress: bool | None = None,
                 mode: Literal["new", "resume", "overwrite"] = "new", command: list[str] | None = None,
                 words: ModeWords = CLI_WORDS, progress_every_s: float = DEFAULT_EVERY_S):
        self.plan = plan
        self.recipe = plan.recipe
        self.group = plan.group
        self.primary = self.group.rank == 0
        self.out = out
        self.progress = progress if self.primary else False  # one progress bar: rank 0's
        self.progress_every_s = progress_every_s  # progress lines when stderr is not a terminal
        self.mode = mode
        self.command = command
        self.output_dir = Path(self.recipe.run.output_dir)
        self.words = words  # the caller's words for --resume, --overwrite, ... in refusals
        self.rundir = RunDirectory(self.output_dir, words)
        self.states = StateStore(self.output_dir / STATE_DIR, self.recipe.run.keep_states)
        # the teacher's family's tokenizer (the student reads the same ids)
        self.tokenizer = family_of(plan.teacher_config).tokenizer(plan.vocab, self.recipe.data.lowercase)
        self._datasets: dict[str, EncodedDataset] = {}
        self._examples: dict = {}  # the task's examples each encoded split came from
        self._log = None
        self._tensorboard = None  # a tensorboard_log.TensorBoardLog when run.tensorboard (rank 0)
        self.stop = StopRequests()
        self.results: list[dict] = []
        # which checkpoint (relative to the run directory) each finished phase handed on
        self.handed: dict = {"teacher": None, "student": None, "phases": {}}
        self.info: dict = {}
        self.finished_before = False

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str) -> EncodedDataset:
        if split not in self._datasets:
            data = self.recipe.data
            if split == "corpus":
                # plan() read every data file once already (its preflight); reuse what it kept
                docs = self.plan.corpus_documents or read_corpus_documents(data.corpus)
                # pack only as many sequences as the hungriest corpus phase reads (0: all)
                limits = [p.spec.max_examples for p in self.plan.phases if p.spec.data == "corpus"]
                limit = 0 if 0 in limits else max(limits, default=0)
                self._datasets[split] = pack_corpus(docs, self.tokenizer, data.max_seq_length,
                                                    max_sequences=limit or None)
            else:
                task_type = self.plan.task_type
                if split == AUGMENTED_SPLIT:  # prepared before the first phase (_prepare_augmented)
                    examples = task_type.read(Path(self.plan.augment.output), self.plan.task)
                else:
                    examples = self.plan.examples.get(split) or task_type.read(Path(getattr(data, split)),
                                                                               self.plan.task)
                if split == "dev":
                    examples = capped_examples(examples, self.recipe.run.max_examples)
                self._examples[split] = examples
                self._datasets[split] = task_type.encode(examples, self.tokenizer, data.max_seq_length)
        return self._datasets[split]

    def _prepare_augmented(self, phases: tuple[PhasePlan, ...]) -> None:
        """Augment data.train ([augment]) once, before the first phase that reads it: rank 0 runs
        (or finds up to date) the job, resumable in chunks; the other ranks wait for it."""
        job = self.plan.augment
        if job is None or not any(p.spec.data == AUGMENTED_SPLIT for p in phases):
            return
        if self.primary:
            try:
                manifest = run_job(job, progress=self.progress, should_stop=lambda: self.stop.requested,
                                   say=self.say)
            except AugmentStopped:
                self.interrupted(None)
            c = manifest["counts"]
            self.log({"event": "augmented", "output": str(job.output), "input_rows": c["input_rows"],
                      "output_rows": c["output_rows"], "seconds": manifest["seconds"]})
            self.say(f"[augment] {c['input_rows']} training rows -> {c['output_rows']} ({job.output})")
        barrier(self.group)

    def shape(self, batch: dict) -> dict:
        """A batch as the model gets it: cut to its longest sequence, rounded up to data.pad_to_multiple_of,
        with "longest" padding or "bucketed" batching; otherwise max_seq_length long."""
        data = self.recipe.data
        if data.padding == "longest" or data.batching == "bucketed":
            return trim_padding(batch, data.pad_to_multiple_of)
        return batch

    # --- logging --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """One metrics.jsonl record; every record carries its wall-clock time (rank 0 only)."""
        if not self.primary:
            return
        record = {**record, "time": round(time.time(), 3)}
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        if self._tensorboard is not None:
            self._tensorboard.add(record, self._global_offset())

    def _global_offset(self, results: list[dict] | None = None) -> int:
        """The run's global step before the current phase: the steps of the phases finished."""
        return sum(int(r.get("steps") or 0) for r in (self.results if results is None else results))

    def _open_tensorboard(self, saved: SavedState | None):
        """run.tensorboard: the event-file writer (rank 0); a resume purges the steps it recomputes."""
        if not (self.primary and self.recipe.run.tensorboard):
            return None
        from distill_engine.tensorboard_log import TensorBoardLog

        purge = None
        if saved is not None:
            step = int((saved.doc["progress"] or {}).get("step") or 0)  # 0: the state of a phase's end
            purge = self._global_offset(saved.doc["results"]) + step + 1
        return TensorBoardLog(self.rundir.inside(TENSORBOARD_DIR), purge_step=purge)

    def say(self, text: str) -> None:
        if not self.primary:
            return
        print(text, file=self.out or sys.stdout, flush=True)

    def run_info(self) -> dict:
        """What every checkpoint manifest says of the run that wrote it."""
        return {"id": self.info.get("id"), "seed": self.recipe.run.seed, "fingerprint": self.info.get("fingerprint")}

    # --- the teacher-output cache ----------------------------------------------------------------
    def cache_needs(self) -> list[tuple[PhasePlan, int, Path | None]]:
        """For each phase that caches: (phase, bytes it will add to the cache, the entry it reuses or
        None). An entry can be known to exist only for a teacher this run does not fine-tune first."""
        plan, run = self.plan, self.recipe.run
        root = teacher_cache.cache_root(run.cache_dir)
        out, tuned = [], False
        for phase in plan.phases:
            tuned = tuned or phase.spec.kind == "teacher_finetune"
            if not phase.cached:
                continue
            taps = phase.graph.teacher_taps
            if phase.spec.data == AUGMENTED_SPLIT and not self.plan.augment.output.is_file():
                # not augmented yet: at most 1 + N rows per text of every training example
                job = self.plan.augment
                factor = 1 + job.settings.n * (2 if job.task.is_pair else 1)
                data = self.dataset("train").head(phase.spec.max_examples or None)
                out.append((phase, factor * teacher_cache.estimate_bytes(data.lengths, taps, plan.teacher_config,
                                                                         run.cache_dtype), None))
                continue
            data = self.dataset(phase.spec.data).head(phase.spec.max_examples or None)
            if not tuned:
                key = teacher_cache.cache_key(plan.teacher_config, self._given_teacher(), data, taps, run.cache_dtype)
                if (root / key["id"] / teacher_cache.MANIFEST).is_file():
                    out.append((phase, 0, root / key["id"]))
                    continue
            out.append((phase, teacher_cache.estimate_bytes(data.lengths, taps, plan.teacher_config, run.cache_dtype),
                        None))
        return out

    def _given_teacher(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_teacher_state"):
            self._teacher_state = _complete_state(self.plan.teacher_config, self.plan.teacher.state, self.recipe.run.seed,
                                                  f"teacher {self.recipe.teacher.path}")
        return self._teacher_state

    def check_cache_room(self, needs: list | None = None) -> None:
        """Refuse a run whose teacher-output caches do not fit on their disk (before any training);
        `needs`: what `cache_needs()` returned, when the caller has it already."""
        needed = sum(n for _, n, _ in (self.cache_needs() if needs is None else needs))
        if needed:
            teacher_cache.check_room(teacher_cache.cache_root(self.recipe.run.cache_dir), needed)

    def teacher_cache(self, phase: PhasePlan, data: EncodedDataset, teacher_state: dict) -> teacher_cache.TeacherCache:
        """The phase's teacher outputs: an existing cache entry, or one built now (resumably)."""
        plan, run = self.plan, self.recipe.run
        key = teacher_cache.cache_key(plan.teacher_config, teacher_state, data, phase.graph.teacher_taps,
                                      run.cache_dtype)
        root = teacher_cache.cache_root(run.cache_dir)
        model = None

        def forward(batch):
            nonlocal model
            if model is None:
                model = plan.backend.load_model(plan.teacher_config, teacher_state, plan.device)
            return model.forward(batch).named()

        t0 = time.perf_counter()
        try:
            cache, status = teacher_cache.build_or_open(
                root, key, data, plan.teacher_config, forward, backend=plan.backend.name, progress=self.progress,
                stop=lambda: self.stop.requested, say=self.say, name=f"{phase.spec.name} teacher cache")
        except teacher_cache.BuildStopped:
            self.interrupted(phase, doing="while building its teacher-output cache (the finished shards are kept)")
        if model is not None:
            del model, forward
            self._release()  # the teacher's graphs: the phase's step is built next
        seconds = round(time.perf_counter() - t0, 1)
        size = cache.manifest["bytes"]
        self.log({"event": "teacher_cache", "phase": phase.spec.name, "status": status, "path": str(cache.path),
                  "bytes": size, "rows": len(data), "taps": cache.taps, "dtype": run.cache_dtype, "seconds": seconds})
        self.say(f"[{phase.spec.name}] teacher cache {status}: {cache.path} ({teacher_cache.human_bytes(size)}, "
                 f"{len(data)} rows, {', '.join(cache.taps)}" + (f"; {seconds} s" if status != "reused" else "") + ")")
        return cache

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, model, where: str = "evaluation", advice: str = "") -> DevMetrics:
        """The dev metrics, carrying the confusion matrix when the task type records one."""
        outputs = self.predict_split(model, "dev", where, advice)
        task_type, dev, examples = self.plan.task_type, self.dataset("dev"), self._examples["dev"]
        metrics = task_type.evaluate(self.plan.task, outputs, dev, examples)
        counts = getattr(task_type, "class_counts", None)  # optional in the protocol
        return DevMetrics(metrics, counts(self.plan.task, outputs, dev, examples) if callable(counts) else None)

    def predict_split(self, model, split: str, where: str = "evaluation", advice: str = "") -> np.ndarray:
        """The model's logits on every row of data.<split> ("dev", "test"), in the file's order."""
        dev = self.dataset(split)
        bs = self.recipe.run.eval_batch_size
        # file order ("fixed"), or sorted by length ("bucketed": each batch is cut to its own length)
        batches = batch_order(dev, bs, shuffle=False, seed=0, batching=self.recipe.data.batching)
        group = self.group
        # in the dev file's order; with several ranks each predicts every N-th batch and the rows
        # are gathered by summing into zeros (exact: each row comes from one rank)
        # a row's outputs as its model's head gives them (graph.taps.HEAD_LOGITS): [C] pooled, [L, C]
        # per token, [L, 2] per span; per-position outputs are kept at the split's full length L
        # (a bucketed batch cut shorter fills the first positions, the rest stays 0: padding)
        width = self.plan.task_type.num_outputs(self.plan.task)
        per_position = per_position_logits(self.plan.task_type.head)
        logits = np.zeros((len(dev), *((dev.max_length,) if per_position else ()), width), np.float32)
        for rows in batches[group.rank::group.world_size]:
            # the last batch is filled up with repeats of its first row and the extra outputs are
            # dropped: every evaluation batch has eval_batch_size rows, so a compiled backend builds
            # one graph per length (one in all with max_length padding)
            padded = np.concatenate([rows, np.full(bs - len(rows), rows[0])])
            out = model.predict(self.shape(dev.batch(padded)))[: len(rows)]
            if per_position:
                logits[rows, : out.shape[1]] = out
            else:
                logits[rows] = out
        if group.world_size > 1:
            logits = group.all_sum(logits.ravel()).reshape(logits.shape).astype(np.float32)
        if not np.all(np.isfinite(logits)):
            raise DivergenceError(f"{where}: the model's {split} logits are NaN or inf, so there is no metric to report; "
                                  f"{advice or 'its weights are damaged'}")
        return logits

    def score_test(self, model, where: str) -> tuple[dict[str, float] | None, np.ndarray | None]:
        """(metrics, outputs) of data.test when its file is labelled (CoNLL-2003's test split);
        (None, None) for an unlabelled one (GLUE's test files) or none."""
        if not self.recipe.data.test:
            return None, None
        data = self.dataset("test")
        if self._examples["test"].labels is None:
            return None, None
        outputs = self.predict_split(model, "test", where)
        return self.plan.task_type.evaluate(self.plan.task, outputs, data, self._examples["test"]), outputs

    def write_test_predictions(self, phase: PhasePlan, model, outputs: np.ndarray | None = None) -> None:
        """data.test's predictions in the task type's submission format (GLUE's for the sequence
        type), <phase>/test_predictions.tsv (or the type's `predictions_file`); `outputs`: the model's on data.test, when known."""
        outputs = self.predict_split(model, "test", phase.where) if outputs is None else outputs
        if not self.primary:
            return
        # a task type may name its own file (the span type's SQuAD JSON)
        path = self.output_dir / phase.spec.name / getattr(self.plan.task_type, "predictions_file", TEST_PREDICTIONS)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.plan.task_type.write_predictions(self.plan.task, Path(self.recipe.data.test), outputs,
                                                     self.dataset("test"), path)
        self.log({"event": "test_predictions", "phase": phase.spec.name, "rows": rows,
                  "path": str(path.relative_to(self.output_dir))})
        self.say(f"[{phase.spec.name}] test predictions ({rows} rows, {self.plan.task_type.submission_format}) "
                 f"written to {path}")

    # --- run states -----------------------------------------------------------------------
    def write_state(self, phase: PhasePlan, label: str, progress: dict | None,
                    tensors: dict[str, dict[str, np.ndarray]], best_file: Path | None = None) -> Path:
        """Write a run state (mid-phase: `progress` and tensors; phase end: neither); rank 0 only."""
        if not self.primary:
            return None
        self._log.flush()
        doc = {"kind": "mid" if progress is not None else "end", "phase_index": phase.index, "phase": phase.spec.name,
               "progress": progress, "results": self.results, "handed": self.handed,
               "log_offset": self._log.tell(), "run": self.run_info(), "time": time.time()}
        t0 = time.perf_counter()
        path = self.states.write(f"{phase.spec.name}-{label}", doc, tensors, best_file)
        self.log({"event": "state", "phase": phase.spec.name, "step": (progress or {}).get("step"),
                  "path": str(path.relative_to(self.output_dir)), "seconds": round(time.perf_counter() - t0, 3),
                  "bytes": self.states.size_bytes(path)})
        return path

    def resume_command(self) -> str:
        args = list(self.command or ["run", "RECIPE"])
        args = [a for a in args if a != "--overwrite"]
        if "--resume" not in args:
            args.append("--resume")
        nproc = os.environ.get(NPROC_ENV)  # set by run --nproc N for the ranks it starts
        if nproc and self.group.world_size > 1 and "--nproc" not in args:
            args += ["--nproc", nproc]
        return shlex.join(["distill-engine", *args])

    def phase_context(self) -> PhaseContext:
        """What a training phase gets of this runner (`training.PhaseContext`), and no more."""
        return PhaseContext(plan=self.plan, group=self.group, progress=self.progress, run_info=self.run_info,
                            phase_dir=self.rundir.inside, dataset=self.dataset, shape=self.shape,
                            teacher_cache=self.teacher_cache, evaluate=self.evaluate, log=self.log, say=self.say,
                            write_state=self.write_state, stop_requested=lambda: self.stop.requested,
                            interrupted=self.interrupted, progress_every_s=self.progress_every_s)

    def interrupted(self, phase: PhasePlan | None, step: int | None = None, total: int | None = None,
                    doing: str | None = None) -> None:
        """Raise RunInterrupted after a stop request (on every rank at the same point); the state is
        written already."""
        where = f" in phase {phase.spec.name} at step {step} of {total}" if phase is not None and step else (
            f" in phase {phase.spec.name} {doing}" if phase is not None and doing else
            f" after phase {phase.spec.name}" if phase is not None else "")
        self.log({"event": "interrupted", "signal": self.stop.name, "phase": phase.spec.name if phase else None,
                  "step": step})
        self.info["status"] = "interrupted"
        if self.primary:
            self.rundir.write_run(self.info)
        # the other ranks wait for rank 0's state and run.json: a launcher that sees a rank exit
        # stops the others
        barrier(self.group)
        raise RunInterrupted(f"interrupted by {self._signal_name()}{where}; the run state is saved in "
                             f"{self.output_dir / STATE_DIR}. Resume with: {self.resume_command()}", self.stop.signum)

    def _signal_name(self) -> str:
        """The signal that stopped the run, as the user would name it. A backend whose framework
        turns a Ctrl-C inside its own code into a SIGTERM to the process (`sigint_as_sigterm`:
        MindSpore's graph runs do) leaves SIGTERM ambiguous, and the message says so rather than
        tell a user who pressed Ctrl-C that something sent SIGTERM."""
        name = self.stop.name or "another rank"
        if name == "SIGTERM" and getattr(self.plan.backend, "sigint_as_sigterm", False):
            return f"SIGTERM (or Ctrl-C: {self.plan.backend.name} turns a SIGINT during a step into SIGTERM)"
        return name

    # --- starting or resuming ----------------------------------------------------------------
    def _start(self) -> SavedState | None:
        """Open the run directory; return the state to resume from (None: start at phase 0)."""
        recipe_dict = recipe_to_dict(self.recipe)
        digests = input_digests(recipe_dict)
        backend = self.plan.backend.name
        previous = self.rundir.open(self.mode)
        w = self.words
        saved = None
        if previous is not None:
            if previous.get("format") != RUN_FORMAT:
                raise RunDirError(f"run.output_dir: {self.output_dir} holds a run without run state (written by an "
                                  f"older distill-engine); it cannot be resumed: pass {w.overwrite} to replace it")
            if previous.get("backend") != backend:
                raise RunDirError(f"{w.resume}: the run in {self.output_dir} was started with {w.backend} "
                                  f"{previous.get('backend')}; resume it with the same backend")
            old_recipe = json.loads((self.output_dir / "recipe.json").read_text())["recipe"]
            changed = differences(old_recipe, previous.get("inputs", {}), recipe_dict, digests)
            if changed:
                raise RunDirError(f"{w.resume}: the recipe differs from the run's in {self.output_dir} in what changes "
                                  f"the results: {'; '.join(changed)}; undo these changes, or start a new run "
                                  f"(another {w.output_dir}, or {w.overwrite})")
            if previous.get("status") == "finished":
                self.finished_before = True
                self.info = previous
                return None
            saved = self.states.latest()
        if saved is None:  # a new run (or a resumed one that never wrote a state: start it again)
            if previous is not None:
                self.rundir.clear()
            self.info = {"format": RUN_FORMAT, "id": previous.get("id") if previous else RunDirectory.new_run_id(),
                         "created": time.time(), "backend": backend, "seed": self.recipe.run.seed,
                         "fingerprint": fingerprint(recipe_dict, digests, backend), "inputs": digests,
                         "status": "running", "command": self.command, "versions": self._versions()}
            write_json_atomically(self.output_dir / "recipe.json", {"backend": backend, "recipe": recipe_dict})
            self.rundir.write_run(self.info)
            return None
        # "versions": a run started before run.json recorded them gets this process's
        self.info = {"versions": self._versions(), **previous, "status": "running"}
        self.rundir.write_run(self.info)
        return saved

    def _versions(self) -> dict:
        """What ran the run (run.json "versions", read by the run report)."""
        return {"backend": self.plan.backend.version(), "python": platform.python_version(), "numpy": np.__version__,
                "platform": platform.platform()}

    def _open_log(self, saved: SavedState | None):
        path = self.output_dir / "metrics.jsonl"
        self._discarded = 0
        if saved is not None and path.exists():
            # Records written after the state belong to steps the resume computes again: they are
            # cut, so no step is ever logged twice. The records of earlier resumes and interruptions
            # among them are kept (the log tells every attempt), moved to the end.
            offset = int(saved.doc["log_offset"])
            with open(path, "r+b") as f:
                f.seek(offset)
                tail = _records(f.read().decode("utf-8", "replace"))
                f.truncate(offset)
            kept = [r for r in tail if r.get("event") in LIFECYCLE_EVENTS]
            self._discarded = len(tail) - len(kept)
            with open(path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        return open(path, "a")

    def _start_together(self) -> SavedState | None:
        """Rank 0 opens the run directory (`_start`); the others, once it has, read what it chose.
        A failure of rank 0 here stops every rank (no rank waits for one that is gone)."""
        failed = None
        saved = None
        if self.primary:
            try:
                self.check_cache_room()  # before the run directory is touched: nothing to undo
                saved = self._start()
            except DistillError as exc:
                failed = exc
        if any_rank(self.group, failed is not None):
            if failed is not None:
                raise failed
            raise RankFailed("rank 0 could not open the run directory (its error is above)")
        if not self.primary:
            info = self.rundir.read_run() or {}
            self.info = info
            self.finished_before = info.get("status") == "finished"
            saved = None if self.finished_before else self.states.latest()
        barrier(self.group)
        return saved

    # --- the run --------------------------------------------------------------------------
    def run(self) -> list[dict]:
        try:
            saved = self._start_together()
            if self.finished_before:
                summary = self.output_dir / "summary.json"
                self.results = json.loads(summary.read_text()) if summary.is_file() else []
                self.say(f"the run in {self.output_dir} is finished ({len(self.results)} phases; "
                         f"{summary.name}); nothing to resume")
                return self.results
            with (self._open_log(saved) if self.primary else open(os.devnull, "w")) as self._log, self.stop:
                self._tensorboard = self._open_tensorboard(saved)
                try:
                    self._run_phases(saved)
                except RunInterrupted:
                    raise
                except DistillError as exc:  # e.g. divergence: run.json says why the run stopped
                    self.log({"event": "failed", "error": str(exc)})
                    self.info.update(status="failed", error=str(exc))
                    if self.primary:
                        self.rundir.write_run(self.info)
                    raise
                finally:
                    if self._tensorboard is not None:
                        self._tensorboard.close()
                        self._tensorboard = None
            if self.primary:
                self._write_report()
            return self.results
        finally:
            self.rundir.close()

    def _write_report(self) -> None:
        """The run report (report/) of the finished run; a failure to write it is a warning, not a
        failed run (`distill-engine report` writes it again)."""
        from distill_engine.report import write_report

        try:
            path, warnings = write_report(self.output_dir, backend=self.plan.backend, device=self.plan.device)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 (a finished run stays finished)
            print(f"warning: the run report could not be written ({type(exc).__name__}: {exc}); "
                  f"write it with: distill-engine report {self.output_dir}", file=sys.stderr, flush=True)
            return
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        self.say(f"report written to {path}")

    def _load_handed(self, key: str | None) -> dict | None:
        return None if key is None else load_neutral(self.rundir.inside(key)).state

    def _run_phases(self, saved: SavedState | None) -> list[dict]:
        plan = self.plan
        seed = self.recipe.run.seed
        self._release()  # start from a clean slate: graphs compiled earlier in this process are dropped
        teacher_state = self._given_teacher()
        init_state = None
        if plan.student_init is not None:
            init_state = _complete_state(plan.student_config, plan.student_init.state, seed,
                                         f"student.init {self.recipe.student.init}")
        first, mid = 0, None
        student_state = init_state
        if saved is None:
            self.log({"event": "start", "run_id": self.info["id"], "backend": plan.backend.name,
                      "backend_version": plan.backend.version(), "device": str(plan.device),
                      "processes": self.group.world_size, "launcher": self.group.launcher})
        else:
            doc = saved.doc
            self.results, self.handed = list(doc["results"]), doc["handed"]
            first = doc["phase_index"] + (1 if doc["kind"] == "end" else 0)
            mid = saved if doc["kind"] == "mid" else None
            teacher_state = self._load_handed(self.handed["teacher"]) or teacher_state
            student_state = self._load_handed(self.handed["student"]) or init_state
            step = (doc["progress"] or {}).get("step")
            self.log({"event": "resume", "run_id": self.info["id"], "from_state": saved.path.name,
                      "phase": doc["phase"], "step": step, "records_recomputed": getattr(self, "_discarded", 0),
                      "backend_version": plan.backend.version(), "device": str(plan.device),
                      "processes": self.group.world_size, "launcher": self.group.launcher})
            self.say(f"resuming {self.output_dir} from {saved.path.name} "
                     f"({'phase ' + doc['phase'] + ' step ' + str(step) if mid else 'after phase ' + doc['phase']})")
        self._prepare_augmented(plan.phases[first:])
        for phase in plan.phases[first:]:
            spec = phase.spec
            if spec.kind == "evaluate":
                target = teacher_state if spec.target == "teacher" else student_state
                config = plan.teacher_config if spec.target == "teacher" else plan.student_config
                check_weights(target, f"{phase.where}: the {spec.target} to evaluate",
                              "evaluating it gives no metric; check the checkpoint or the phase that trained it")
                model = plan.backend.load_model(config, target, plan.device)
                metrics = self.evaluate(model, phase.where)
                test, outputs = self.score_test(model, phase.where)
                if self.recipe.data.test and spec.target == "student":
                    self.write_test_predictions(phase, model, outputs)
                del model, outputs
                self._phase_done(phase, metrics, steps=0, test=test)
                continue
            if spec.kind == "teacher_finetune":
                training = PhaseTraining(self.phase_context(), phase, plan.teacher_config, teacher_state, None, mid)
                teacher_state, metrics, steps, kept = training.run()
                self.handed["teacher"] = f"{spec.name}/{kept}"
            else:
                if spec.student_from == "init" or (spec.student_from == "previous" and student_state is None):
                    start = init_state if init_state is not None else init_parameters(plan.student_config, seed)
                elif spec.student_from == "previous":
                    start = student_state
                else:
                    start = self._load_handed(self.handed["phases"][spec.student_from])
                training = PhaseTraining(self.phase_context(), phase, plan.student_config, start, teacher_state, mid)
                student_state, metrics, steps, kept = training.run()
                self.handed["student"] = f"{spec.name}/{kept}"
            self.handed["phases"][spec.name] = f"{spec.name}/{kept}"
            mid = None
            shapes = len(training.shapes)
            del training  # its models must be unreachable when the backend releases its caches
            self._phase_done(phase, metrics, steps, shapes=shapes)
        self.log({"event": "end"})
        self.info["status"] = "finished"
        if self.primary:
            write_json_atomically(self.output_dir / "summary.json", self.results)
            self.rundir.write_run(self.info)
        barrier(self.group)  # every rank returns once the run is written
        return self.results

    def _phase_done(self, phase: PhasePlan, metrics: dict | None, steps: int, shapes: int | None = None,
                    test: dict | None = None) -> None:
        self._report(phase, metrics, steps, shapes, test)
        self._release()
        self.write_state(phase, "end", None, {})
        if any_rank(self.group, self.stop.requested):
            self.interrupted(phase)

    def _release(self) -> None:
        # The phase's models are unreachable once its method returned: collect them, then let the
        # backend drop what it cached for them (compiled graphs), before the next phase builds its own.
        gc.collect()
        release_caches(self.plan.backend)

    def _report(self, phase: PhasePlan, metrics: dict | None, steps: int, shapes: int | None = None,
                test: dict | None = None) -> None:
        result = {"phase": phase.spec.name, "kind": phase.spec.kind, "steps": steps, "dev": metrics}
        if test is not None:  # a labelled data.test, scored by an evaluate phase
            result["test"] = dict(test)
        self.results.append({**result, "dev": dict(metrics) if metrics is not None else None})
        counts = classes_of(metrics)
        # shapes: distinct training batch shapes (a compiled backend's graph count for the step);
        # classes: the confusion matrix of the evaluation of the weights the phase hands on
        self.log({"event": "phase_end", **result, **({"shapes": shapes} if shapes is not None else {}),
                  **({"classes": counts.to_record()} if counts is not None else {})})

        def shown(values: dict) -> str:
            # the metrics; their details ("<metric>/<detail>": per entity type) stay in the results
            return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in values.items()
                             if "/" not in k)

        if metrics:
            self.say(f"[{phase.spec.name}] {phase.spec.kind}: {steps} steps, dev {shown(metrics)}"
                     + (f"; test {shown(test)}" if test else ""))
        elif self.plan.task is not None and self.recipe.data.dev and phase.spec.kind != "evaluate":
            self.say(f"[{phase.spec.name}] {phase.spec.kind}: {steps} steps (not evaluated: this phase does not "
                     "train the prediction layer)")
        else:
            self.say(f"[{phase.spec.name}] {phase.spec.kind}: {steps} steps")
        if counts is not None and self.primary:
            model = "teacher" if phase.spec.kind == "teacher_finetune" or phase.spec.target == "teacher" else "student"
            why = degenerate(counts, metrics, self.plan.task.metrics)
            if why:  # one line per evaluation (the report says the same: report/markdown.py)
                print(f"warning: [{phase.spec.name}] the {model} looks degenerate: {'; '.join(why)}", file=sys.stderr,
                      flush=True)


__all__ = ["Runner", "plan", "DistillError"]
