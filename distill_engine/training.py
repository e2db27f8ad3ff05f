"""One training phase: the step loop, evaluation and best-keeping, run states, and the guards.

`PhaseTraining` runs one planned training phase from its first step, or from a saved run state
(`runstate.SavedState`) exactly where that state left it: same weights, trainer state (Adam
moments, schedule position, loss scale, dropout RNG), data position and best-so-far. It writes a
run state every `run.checkpoint_every` steps and/or `run.checkpoint_minutes`, and when a stop was
requested (SIGINT/SIGTERM) after the current step. What it needs of the run around it (the data,
evaluation, the log, run states, stop requests) comes through a `PhaseContext`, not the runner.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.checkpoint import WEIGHTS, save_checkpoint
from distill_engine.data import batch_order, num_batches, primary_metric
from distill_engine.distributed import StepAgreement, shard_batch
from distill_engine.errors import DistillError, RecipeError
from distill_engine.planning import PhasePlan, Plan, phase_steps, train_spec
from distill_engine.progress import DEFAULT_EVERY_S, phase_progress
from distill_engine.recipe import recipe_to_dict
from distill_engine.runstate import SavedState
from distill_engine.tasks.classes import ClassCounts, DevMetrics, classes_of

# The divergence guard compares each loss with the median of the phase's first few.
REFERENCE_STEPS = 10
# ... and every loss term (unweighted) with an absolute ceiling, because the first losses can be
# absurd already: a teacher fine-tuned into collapse (lr 1.0, clipping off) has LayerNorm gains in
# the thousands, and TD1's hidden-state MSE against it sits at 1e9-1e10 from step 1, which the
# relative check then takes as normal. From a fresh student every built-in loss kind starts at a
# few units at most (cross-entropies near ln(classes), MSEs of LayerNorm-scaled states and of
# attention scores in the tens), and stays there as it learns; 1e6 is far above any of them.
MAX_LOSS_TERM = 1e6
# Weights of a trained BERT stay within a few units; this far beyond means the run blew up.
MAX_ABS_WEIGHT = 1e6


class DivergenceError(DistillError):
    """Training diverged (a non-finite or exploding loss, or weights that are not finite)."""


def check_weights(weights: dict[str, np.ndarray], what: str, advice: str) -> None:
    """Raise one line naming the first tensor that holds NaN/inf or an absurd magnitude."""
    for name, value in weights.items():
        if not np.all(np.isfinite(value)):
            raise DivergenceError(f"{what}: tensor {name} holds NaN or inf; {advice}")
        if value.size and float(np.max(np.abs(value))) > MAX_ABS_WEIGHT:
            raise DivergenceError(f"{what}: tensor {name} reached |w| = {float(np.max(np.abs(value))):.3g}; {advice}")


def data_record(recipe) -> dict:
    """What a checkpoint's manifest says of the inputs its model reads (`predict` and
    `distill_engine.load` default to it): the task (a preset's name or its definition), the
    sequence length and the casing."""
    data = recipe_to_dict(recipe)["data"]
    return {key: data[key] for key in ("task", "max_seq_length", "lowercase")}


@attrs.frozen
class PhaseContext:
    """What a training phase needs of the run around it, by name: the runner provides it
    (`Runner.phase_context()`), and a phase sees nothing else of the runner."""

    plan: Plan  # the checked recipe: backend, device, task, vocabulary, configs (read only)
    group: Any  # this process's distributed.ProcessGroup (rank 0 is the primary)
    progress: bool | None  # a progress bar: on, off, or None (when stderr is a terminal)
    run_info: Callable[[], dict]  # what every checkpoint manifest says of the run
    phase_dir: Callable[[str], Path]  # a phase's directory inside the run directory
    dataset: Callable[[str], Any]  # a split ("train", "train_aug", "corpus", ...) as an EncodedDataset
    shape: Callable[[dict], dict]  # a batch shaped as the recipe's batching says
    teacher_cache: Callable[..., Any]  # (phase, data, teacher_state) -> the phase's TeacherCache, built if need be
    evaluate: Callable[..., dict]  # (model, where, advice) -> the dev metrics
    log: Callable[[dict], None]  # a metrics.jsonl record (rank 0 writes)
    say: Callable[[str], None]  # a line for the user (rank 0 prints)
    write_state: Callable[..., None]  # (phase, label, progress, tensors, best_file): a run state
    stop_requested: Callable[[], bool]  # SIGINT/SIGTERM arrived: stop after this step
    interrupted: Callable[..., None]  # (phase, step, total): log it, say how to resume, raise RunInterrupted
    progress_every_s: float = DEFAULT_EVERY_S  # without a terminal: seconds between progress lines (0: none)

    @property
    def recipe(self):
        return self.plan.recipe

    @property
    def primary(self) -> bool:
        return self.group.rank == 0


class PhaseTraining:
    """Train one phase; `run()` returns (weights handed on, dev metrics or None, steps, "best" | "final")."""

    def __init__(self, context: PhaseContext, phase: PhasePlan, config: BertConfig, state: dict,
                 teacher_state: dict | None, saved: SavedState | None = None):
        self.context, self.phase, self.config = context, phase, config
        self.spec = phase.spec
        self.where = phase.where
        spec = phase.spec
        self.data = context.dataset(spec.data).head(spec.max_examples or None)
        if phase.graph.needs_labels and self.data.labels is None:
            raise RecipeError(f"{phase.where}: its losses need labels, and data.{spec.data} has none")
        self.per_epoch = num_batches(len(self.data), spec.batch_size, drop_last=spec.drop_last)
        self.total = phase_steps(len(self.data), spec)  # at least 1: plan() checked it
        self.train_spec = train_spec(context.plan, phase, self.total)
        self.state, self.teacher_state, self.saved = state, teacher_state, saved
        # the distinct (rows, length) shapes of the phase's training batches: a compiled backend
        # builds one graph per shape (logged as "shapes" in the phase_end record)
        self.shapes: set[tuple[int, int]] = set()
        self.ckpt_dir = context.phase_dir(spec.name)
        backend = context.plan.backend
        self.manifest = {"phase": spec.name, "kind": spec.kind, "backend": backend.name,
                         "mapping": phase.graph.mapping.to_dict() if phase.graph.mapping else None,
                         "run": context.run_info(), "data": data_record(context.recipe)}
        # Only a phase that trains the prediction layer is evaluated: the others (general
        # distillation, TD1) leave the classifier as it was initialised, so their dev metrics
        # would score an untrained head ("accuracy 0.3162, f1 0.0000" read as a failed run; the
        # original TinyBERT does not evaluate them either). They hand on their final weights; an
        # evaluate phase scores the student where it means something.
        self.evaluates = (context.plan.task is not None and bool(context.recipe.data.dev)
                          and phase.graph.trains_logits)
        self.metric_name = primary_metric(context.plan.task) if self.evaluates else None
        self.keep_best = spec.keep_best and self.evaluates
        # early stopping (plan() checked eval_every > 0 and that the phase trains the prediction
        # layer): the best dev metric so far, its step, and the evaluations since, without improving
        self.patience = spec.early_stopping_patience if self.evaluates else 0
        self.watch: dict = {"best": None, "best_step": 0, "waited": 0}
        self.stopped_early: dict | None = None  # the "early_stop" record, once the phase stopped
        self.advice = (f"the run diverged; lower phases.{spec.name}.optimizer.lr "
                       f"(now {spec.optimizer.lr:g}) or phases.{spec.name}.optimizer.max_grad_norm, or check the data")

    # --- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self, name: str, step: int, metrics: dict | None, weights: dict | None = None) -> dict:
        """Save a checkpoint (rank 0) and return its weights (every rank: they are handed on)."""
        weights = self.model.state_dict() if weights is None else weights
        check_weights(weights, f"{self.where} at step {step}", self.advice)
        if not self.context.primary:
            return weights
        save_checkpoint(self.ckpt_dir / name, self.config, weights, vocab=self.context.plan.vocab, step=step,
                        metrics=metrics, **self.manifest)
        return weights

    def _evaluate(self, step: int) -> dict:
        metrics = self.context.evaluate(self.model, f"{self.where} at step {step}", self.advice)
        counts = classes_of(metrics)
        self.context.log({"event": "eval", "phase": self.spec.name, "step": step, **metrics,
                          **({"classes": counts.to_record()} if counts is not None else {})})
        if self.keep_best and step < self.total and (self.best is None or metrics[self.metric_name] > self.best[0]):
            self.best = (metrics[self.metric_name], step, self._checkpoint("best", step, metrics))
            self.best_classes = counts
        self._last_eval = (step, metrics)
        return metrics

    def _should_stop(self, step: int, metrics: dict) -> bool:
        """Early stopping: count an evaluation that does not beat the best so far (as keep_best
        judges: strictly greater); at `patience` of them in a row, log the stop and say so."""
        value = metrics[self.metric_name]
        watch = self.watch
        if watch["best"] is None or value > watch["best"]:
            watch.update(best=value, best_step=step, waited=0)
            return False
        watch["waited"] += 1
        if watch["waited"] < self.patience:
            return False
        self.stopped_early = {"event": "early_stop", "phase": self.spec.name, "step": step, "total": self.total,
                              "metric": self.metric_name, "value": value, "best": watch["best"],
                              "best_step": watch["best_step"], "patience": self.patience}
        self.context.log(self.stopped_early)
        self.context.say(f"[{self.spec.name}] early stopping at step {step} of {self.total}: dev {self.metric_name} has "
                         f"not improved on {watch['best']:.4f} (step {watch['best_step']}) for {self.patience} "
                         f"evaluation{'s' if self.patience > 1 else ''} (early_stopping_patience)")
        return True

    def _write_state(self, step: int, epoch: int, batch: int, losses: list[float]) -> None:
        if not self.context.primary:
            return
        weights = self.model.state_dict()
        check_weights(weights, f"{self.where} at step {step}", self.advice)
        progress = {"step": step, "epoch": epoch, "batch": batch, "total": self.total, "losses": losses,
                    "best": None if self.best is None else {
                        "value": self.best[0], "step": self.best[1],
                        **({"classes": self.best_classes.to_record()} if self.best_classes is not None else {})},
                    "shapes": sorted(list(shape) for shape in self.shapes),
                    # early stopping's count survives a resume: the stop comes at the same step
                    "early_stopping": dict(self.watch)}
        tensors = {"weights": weights, "trainer": self.trainer.state()}
        best_file = self.ckpt_dir / "best" / WEIGHTS if self.best is not None else None
        self.context.write_state(self.phase, f"{step}", progress, tensors, best_file)

    # --- the loop --------------------------------------------------------------------------------
    def _guard(self, values: dict[str, float], step: int, losses: list[float]) -> None:
        total_loss = values["total"]
        if not math.isfinite(total_loss):
            raise DivergenceError(f"{self.where}: the training loss became {total_loss} at step {step}; {self.advice}")
        factor = self.context.recipe.run.divergence_factor
        if factor > 0:  # run.divergence_factor = 0 turns the whole guard off, the ceiling too
            for term in self.phase.graph.terms:
                value = values.get(term.name)
                if value is not None and abs(value) > MAX_LOSS_TERM:
                    raise DivergenceError(
                        f"{self.where}: the loss term {term.name} is {value:.4g} at step {step}, over {MAX_LOSS_TERM:g}, "
                        f"which no healthy model reaches; {self._absurd_advice()}")
        if len(losses) >= 3 and factor > 0:
            reference = max(statistics.median(losses), 1e-3)
            if total_loss > factor * reference:
                raise DivergenceError(f"{self.where}: the training loss reached {total_loss:.4g} at step {step}, "
                                      f"over {factor:g}x its starting value {reference:.4g} "
                                      f"(run.divergence_factor); {self.advice}")
        if len(losses) < REFERENCE_STEPS:
            losses.append(total_loss)

    def _absurd_advice(self) -> str:
        """An absurd loss at the first steps points at the teacher (a collapsed fine-tuning) as much
        as at this phase's own settings."""
        teacher = (" or the teacher: a teacher_finetune that diverged (a high lr, clipping off) leaves a teacher whose "
                   "outputs no student can match" if self.phase.graph.needs_teacher else "")
        return f"{self.advice}{teacher}"

    def run(self) -> tuple[dict, dict | None, int, str]:
        ctx, spec, plan = self.context, self.spec, self.context.plan
        run = ctx.recipe.run
        backend = plan.backend
        saved = self.saved
        weights = saved.tensors("weights") if saved else self.state
        # The teacher-output cache first: building it runs the teacher alone, before the student
        # and the step exist (less memory at once); with it, the phase loads no teacher at all.
        cache = ctx.teacher_cache(self.phase, self.data, self.teacher_state) if self.phase.cached else None
        self.model = backend.load_model(self.config, weights, plan.device)
        teacher = None
        if self.phase.graph.needs_teacher and cache is None:
            teacher = backend.load_model(plan.teacher_config, self.teacher_state, plan.device)
        self.trainer = backend.trainer(self.model, teacher, self.train_spec)
        self.best = None  # (value, step, weights)
        self.best_classes = None  # the best evaluation's confusion matrix (tasks.classes)
        if saved:
            self.trainer.load_state(saved.tensors("trainer"))
            progress = saved.doc["progress"]
            step, epoch, batch_index = progress["step"], progress["epoch"], progress["batch"]
            losses = list(progress["losses"])
            self.shapes = {tuple(shape) for shape in progress.get("shapes", ())}  # absent in older states
            if isinstance(progress.get("early_stopping"), dict):  # absent in states from before it
                self.watch = {**self.watch, **progress["early_stopping"]}
            if progress["best"] is not None:
                best_weights = saved.tensors("best")
                if best_weights is None:
                    raise DistillError(f"{saved.path}: the state names a best checkpoint but holds no best.safetensors")
                self.best = (progress["best"]["value"], progress["best"]["step"], best_weights)
                self.best_classes = ClassCounts.from_record(progress["best"].get("classes"))  # absent in older states
        else:
            step, epoch, batch_index, losses = 0, 0, 0, []

        agreement = StepAgreement(ctx.group)
        every, minutes = run.checkpoint_every, run.checkpoint_minutes
        last_state = time.monotonic()

        def state_due() -> bool:  # run.checkpoint_every steps or run.checkpoint_minutes since the last state
            return (every > 0 and step % every == 0) or (minutes > 0 and time.monotonic() - last_state >= minutes * 60)

        bar = phase_progress(self.total, spec.name, ctx.progress, initial=step, every_s=ctx.progress_every_s)
        t0 = time.perf_counter()
        self._last_eval: tuple[int, dict] | None = None
        stop_early = False
        try:
            while step < self.total and not stop_early:
                order = batch_order(self.data, spec.batch_size, shuffle=True, seed=run.seed + self.phase.index,
                                    epoch=epoch, drop_last=spec.drop_last, batching=ctx.recipe.data.batching)
                for rows in order[batch_index:]:  # a resumed run continues mid-epoch
                    # shaped as one global batch, then this rank's share (distributed.shard_batch)
                    full = ctx.shape(self.data.batch(rows))
                    shard = shard_batch(full, rows, ctx.group)
                    batch = shard.batch
                    if cache is not None:
                        batch.update(cache.outputs(shard.rows, full["input_ids"].shape[1]))
                    self.shapes.add(full["input_ids"].shape)
                    values = self.trainer.step(batch)
                    step += 1
                    batch_index += 1
                    due = step < self.total and state_due()
                    # every rank: the same stop/state decision and the global batch's losses
                    stopping, due, values = agreement.agree(ctx.stop_requested(), due, values, shard.real_rows,
                                                            len(rows))
                    self._guard(values, step, losses)
                    if step % run.log_every == 0 or step == self.total:
                        ctx.log({"event": "train", "phase": spec.name, "step": step, "epoch": epoch,
                                    "elapsed_s": round(time.perf_counter() - t0, 3), **values})
                    bar.set_postfix(loss=f"{values['total']:.4f}", refresh=False)  # before update: its line shows it
                    bar.update(1)
                    if self.evaluates and spec.eval_every and step % spec.eval_every == 0 and step < self.total:
                        metrics = self._evaluate(step)
                        # (every rank evaluated the same weights on the same data: they stop alike)
                        stop_early = self.patience > 0 and self._should_stop(step, metrics)
                    if step >= self.total or stop_early:
                        break
                    if ctx.group.world_size == 1:
                        # one process decides here, after this step's log and evaluation (a
                        # signal that arrived meanwhile stops at this step); several agreed above
                        stopping = ctx.stop_requested()
                        due = state_due()
                    if due or stopping:
                        self._write_state(step, epoch, batch_index, losses)
                        last_state = time.monotonic()
                    if stopping:
                        ctx.interrupted(self.phase, step, self.total)
                if batch_index >= self.per_epoch:
                    epoch, batch_index = epoch + 1, 0
        finally:
            bar.close()
        if stop_early and self._last_eval is not None and self._last_eval[0] == step:
            final_metrics = self._last_eval[1]  # the evaluation that stopped it is the final one
        else:
            final_metrics = self._evaluate(step) if self.evaluates else None
        final_state = self._checkpoint("final", step, final_metrics)
        if self.best is not None and self.best[0] > final_metrics[self.metric_name]:
            ctx.say(f"[{spec.name}] best {self.metric_name} {self.best[0]:.4f} at step {self.best[1]} "
                       f"(final {final_metrics[self.metric_name]:.4f}); handing on the best")
            metrics = DevMetrics({**final_metrics, "best_" + self.metric_name: self.best[0], "best_step": self.best[1]},
                                 self.best_classes)  # the classes of what is handed on: the best
            return self.best[2], metrics, step, "best"
        if self.keep_best:  # the final weights are the best seen: "best" must say so too
            self._checkpoint("best", step, final_metrics, weights=final_state)
        return final_state, final_metrics, step, "final"

