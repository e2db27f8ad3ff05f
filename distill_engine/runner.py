"""The neutral runner: walks a planned recipe's phases, owns data order, evaluation, checkpoints and logs.

`distill_engine.planning.plan()` resolves and checks everything first; `Runner.run()` then executes
the phases; backends only ever see one phase's models and steps.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import attrs
import numpy as np

from distill_engine.backend import TrainSpec, release_caches
from distill_engine.bert import BertConfig, init_parameters
from distill_engine.checkpoint import check_tensors, save_checkpoint
from distill_engine.data import (EncodedDataset, WordPieceTokenizer, compute_metrics, iterate_batches, num_batches,
                                 pack_corpus, primary_metric, read_corpus_documents, read_glue_tsv, trim_padding)
from distill_engine.errors import DistillError, RecipeError
from distill_engine.optim import OptimizerSpec, ScheduleSpec, learning_rates
from distill_engine.planning import Plan, PhasePlan, plan  # noqa: F401  (plan: re-exported for callers)
from distill_engine.recipe import recipe_to_dict

# new heads and projections may be missing from a checkpoint: they are initialised fresh
_FRESH_PREFIXES = ("classifier.", "fit_dense")


def _complete_state(config: BertConfig, state: dict[str, np.ndarray], seed: int, source: str) -> dict[str, np.ndarray]:
    """Check a loaded state against `config`, initialising a missing head or projection."""
    missing = check_tensors(config, state, source, allow_missing=_FRESH_PREFIXES)
    if not missing:
        return state
    return {**state, **init_parameters(config, seed, only=set(missing))}


class Runner:
    """Executes a `Plan`: one phase after another, handing weights on, logging as it goes."""

    def __init__(self, plan: Plan, *, out: TextIO | None = None, progress: bool | None = None):
        self.plan = plan
        self.recipe = plan.recipe
        self.out = out
        self.progress = progress
        self.output_dir = Path(self.recipe.run.output_dir)
        self.tokenizer = WordPieceTokenizer(plan.vocab, lowercase=self.recipe.data.lowercase)
        self._datasets: dict[str, EncodedDataset] = {}
        self._log = None
        self.results: list[dict] = []

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str) -> EncodedDataset:
        if split not in self._datasets:
            data = self.recipe.data
            if split == "corpus":
                docs = read_corpus_documents(data.corpus)
                # pack only as many sequences as the hungriest corpus phase reads (0: all)
                limits = [p.spec.max_examples for p in self.plan.phases if p.spec.data == "corpus"]
                limit = 0 if 0 in limits else max(limits, default=0)
                self._datasets[split] = pack_corpus(docs, self.tokenizer, data.max_seq_length,
                                                    max_sequences=limit or None)
            else:
                examples = read_glue_tsv(getattr(data, split), self.plan.task)
                self._datasets[split] = self.tokenizer.encode(examples.text_a, examples.text_b, data.max_seq_length,
                                                              labels=examples.labels)
        return self._datasets[split]

    def _shape(self, batch: dict) -> dict:
        return trim_padding(batch) if self.recipe.data.padding == "longest" else batch

    # --- logging --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        dev = self.dataset("dev")
        bs = self.recipe.run.eval_batch_size
        logits = []
        for start in range(0, len(dev), bs):
            rows = np.arange(start, min(start + bs, len(dev)))
            # the last batch is filled up with repeats of its first row and the extra outputs are
            # dropped: every evaluation batch has one shape, so a compiled backend builds one graph
            padded = np.concatenate([rows, np.full(bs - len(rows), rows[0])])
            logits.append(model.predict(self._shape(dev.batch(padded)))[: len(rows)])
        return compute_metrics(self.plan.task, np.concatenate(logits), dev.labels)

    # --- the run --------------------------------------------------------------------------
    def run(self) -> list[dict]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "recipe.json").write_text(json.dumps(
            {"backend": self.plan.backend.name, "recipe": recipe_to_dict(self.recipe)}, indent=2))
        plan = self.plan
        seed = self.recipe.run.seed
        self._release()  # start from a clean slate: graphs compiled earlier in this process are dropped
        teacher_state = _complete_state(plan.teacher_config, plan.teacher.state, seed, f"teacher {self.recipe.teacher.path}")
        init_state = None
        if plan.student_init is not None:
            init_state = _complete_state(plan.student_config, plan.student_init.state, seed,
                                         f"student.init {self.recipe.student.init}")
        student_by_phase: dict[str, dict] = {}
        student_state = init_state
        with open(self.output_dir / "metrics.jsonl", "a") as self._log:
            self.log({"event": "start", "time": time.time(), "backend": plan.backend.name,
                      "backend_version": plan.backend.version(), "device": str(plan.device)})
            for phase in plan.phases:
                spec = phase.spec
                if spec.kind == "evaluate":
                    target = teacher_state if spec.target == "teacher" else student_state
                    config = plan.teacher_config if spec.target == "teacher" else plan.student_config
                    metrics = self.evaluate(plan.backend.load_model(config, target, plan.device))
                    self._report(phase, metrics, steps=0)
                    self._release()
                    continue
                if spec.kind == "teacher_finetune":
                    teacher_state, metrics, steps = self._train(phase, plan.teacher_config, teacher_state, None)
                    self._report(phase, metrics, steps)
                    self._release()
                    continue
                if spec.student_from == "init" or (spec.student_from == "previous" and student_state is None):
                    start = init_state if init_state is not None else init_parameters(plan.student_config, seed)
                elif spec.student_from == "previous":
                    start = student_state
                else:
                    start = student_by_phase[spec.student_from]
                student_state, metrics, steps = self._train(phase, plan.student_config, start, teacher_state)
                student_by_phase[spec.name] = student_state
                self._report(phase, metrics, steps)
                self._release()
            self.log({"event": "end", "time": time.time()})
        (self.output_dir / "summary.json").write_text(json.dumps(self.results, indent=2))
        return self.results

    def _release(self) -> None:
        # The phase's models are unreachable once its method returned: collect them, then let the
        # backend drop what it cached for them (compiled graphs), before the next phase builds its own.
        gc.collect()
        release_caches(self.plan.backend)

    def _report(self, phase: PhasePlan, metrics: dict | None, steps: int) -> None:
        result = {"phase": phase.spec.name, "kind": phase.spec.kind, "steps": steps, "dev": metrics}
        self.results.append(result)
        self.log({"event": "phase_end", **result})
        if metrics:
            shown = ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in metrics.items())
            self.say(f"[{phase.spec.name}] {phase.spec.kind}: {steps} steps, dev {shown}")
        else:
            self.say(f"[{phase.spec.name}] {phase.spec.kind}: {steps} steps")

    def _train(self, phase: PhasePlan, config: BertConfig, state: dict, teacher_state: dict | None):
        """Train one phase; returns (state handed on, dev metrics or None, steps taken)."""
        spec, plan, run = phase.spec, self.plan, self.recipe.run
        data = self.dataset(spec.data).head(spec.max_examples or None)
        if phase.graph.needs_labels and data.labels is None:
            raise RecipeError(f"{phase.where}: its losses need labels, and data.{spec.data} has none")
        per_epoch = num_batches(len(data), spec.batch_size, drop_last=spec.drop_last)
        total = math.ceil(spec.epochs * per_epoch) if spec.epochs > 0 else spec.max_steps
        if spec.max_steps > 0:
            total = min(total, spec.max_steps)
        if total < 1:
            raise RecipeError(f"{phase.where}: no training steps ({len(data)} examples)")
        opt = spec.optimizer
        train_spec = TrainSpec(
            graph=phase.graph,
            optimizer=OptimizerSpec(lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
                                    clip=opt.clip, max_grad_norm=opt.max_grad_norm),
            learning_rates=learning_rates(ScheduleSpec(**attrs.asdict(spec.schedule)), opt.lr, total),
            seed=run.seed + phase.index,
            loss_scale=spec.loss_scale or None, loss_scale_window=spec.loss_scale_window)
        backend = plan.backend
        model = backend.load_model(config, state, plan.device)
        teacher = None
        if phase.graph.needs_teacher:
            teacher = backend.load_model(plan.teacher_config, teacher_state, plan.device)
        trainer = backend.trainer(model, teacher, train_spec)
        evaluates = self.plan.task is not None and bool(self.recipe.data.dev)
        metric_name = primary_metric(self.plan.task) if evaluates else None
        # Only a phase that trains the prediction layer can be judged by a dev metric; the others
        # are evaluated for information and always hand on their final weights.
        keep_best = spec.keep_best and evaluates and phase.graph.trains_logits
        best = None  # (value, step, state)
        ckpt_dir = self.output_dir / spec.name
        manifest = {"phase": spec.name, "kind": spec.kind, "backend": backend.name,
                    "mapping": phase.graph.mapping.to_dict() if phase.graph.mapping else None}

        def checkpoint(name: str, step: int, metrics: dict | None) -> dict:
            weights = model.state_dict()
            save_checkpoint(ckpt_dir / name, config, weights, vocab=plan.vocab, step=step, metrics=metrics, **manifest)
            return weights

        def do_eval(step: int) -> dict:
            nonlocal best
            metrics = self.evaluate(model)
            self.log({"event": "eval", "phase": spec.name, "step": step, **metrics})
            if keep_best and step < total and (best is None or metrics[metric_name] > best[0]):
                best = (metrics[metric_name], step, checkpoint("best", step, metrics))
            return metrics

        bar = _progress(total, spec.name, self.progress)
        step, epoch, t0 = 0, 0, time.perf_counter()
        try:
            while step < total:
                for batch in iterate_batches(data, spec.batch_size, shuffle=True, seed=run.seed + phase.index, epoch=epoch,
                                             drop_last=spec.drop_last):
                    values = trainer.step(self._shape(batch))
                    step += 1
                    if not math.isfinite(values["total"]):
                        raise DistillError(f"{phase.where}: loss became {values['total']} at step {step}; "
                                           "lower optimizer.lr or check the data")
                    if step % run.log_every == 0 or step == total:
                        self.log({"event": "train", "phase": spec.name, "step": step, "epoch": epoch,
                                  "elapsed_s": round(time.perf_counter() - t0, 3), **values})
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['total']:.4f}", refresh=False)
                    if evaluates and spec.eval_every and step % spec.eval_every == 0 and step < total:
                        do_eval(step)
                    if step >= total:
                        break
                epoch += 1
        finally:
            bar.close()
        final_metrics = do_eval(step) if evaluates else None
        final_state = checkpoint("final", step, final_metrics)
        if best is not None and best[0] > final_metrics[metric_name]:
            self.say(f"[{spec.name}] best {metric_name} {best[0]:.4f} at step {best[1]} "
                     f"(final {final_metrics[metric_name]:.4f}); handing on the best")
            return best[2], {**final_metrics, "best_" + metric_name: best[0], "best_step": best[1]}, step
        if keep_best:  # the final weights are the best seen: "best" must say so too
            save_checkpoint(ckpt_dir / "best", config, final_state, vocab=plan.vocab, step=step,
                            metrics=final_metrics, **manifest)
        return final_state, final_metrics, step


def _progress(total: int, name: str, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="step", disable=(None if enabled is None else not enabled),
                file=sys.stderr, dynamic_ncols=True, leave=False)
