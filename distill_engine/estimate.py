"""What each phase of a planned run will do, and, when asked, how long it will take: the table
`distill-engine validate` prints.

`phase_sizes` counts, for every phase, the examples it trains on (after `run.max_examples` and the
phase's own cap), its steps (after `run.max_steps`) and its dev evaluations, from the data plan()
read; nothing trains. `time_phase` runs a few real training steps of one phase on the first
batches of its data (and a few evaluation batches) with the run's backend and device, and
`estimate` scales them to the phase's steps and evaluations.

Why no estimate without timed steps: a step's time on this project's CPUs varies by 2-10x between
the backends, the models' sizes, the padding and the machine's load (docs/performance.md: the
training phases run at 13-60 % of a GEMM peak that itself moved between 81 and 276 GFLOP/s), so a
figure computed from a rule of thumb would be read as a measurement and be wrong by that much.
"""

from __future__ import annotations

import gc
import math
import statistics
import time

import attrs
import numpy as np

from distill_engine.augment.recipe import AUGMENTED_SPLIT
from distill_engine.backend import release_caches
from distill_engine.data import batch_order, num_batches
from distill_engine.models.registry import init_parameters
from distill_engine.planning import PhasePlan, phase_steps, train_spec


@attrs.frozen
class PhaseSize:
    phase: PhasePlan
    examples: int  # rows it trains on (an evaluate phase: the dev rows it reads)
    steps: int  # training steps (0 for an evaluate phase)
    evaluations: int  # passes over the dev split (eval_every's and the final one; an evaluate phase: 1)
    dev_rows: int  # rows of the dev split each evaluation reads
    at_most: bool = False  # examples and steps are upper bounds (augmented data not made yet)


@attrs.frozen
class Timing:
    step_s: float  # the median of the timed steps after the first (the first alone when only one ran)
    first_step_s: float  # the first step: a compiled backend builds its graph there
    eval_batch_s: float  # one evaluation batch of run.eval_batch_size rows (after a first one)
    timed_steps: int


def _evaluations(runner, phase, steps: int) -> int:
    # as PhaseTraining.evaluates: only a phase that trains the prediction layer is evaluated
    if runner.plan.task is None or not runner.recipe.data.dev or not phase.graph.trains_logits:
        return 0
    every = phase.spec.eval_every
    return (len(range(every, steps, every)) if every else 0) + 1  # each multiple below the end, and the end


def phase_sizes(runner) -> list[PhaseSize]:
    """Every phase's examples, steps and dev evaluations, as the run will count them."""
    plan = runner.plan
    dev_rows = len(runner.dataset("dev")) if plan.task is not None and runner.recipe.data.dev else 0
    out = []
    for phase in plan.phases:
        spec = phase.spec
        if spec.kind == "evaluate":
            out.append(PhaseSize(phase, dev_rows, 0, 1, dev_rows))
            continue
        at_most = False
        if spec.data == AUGMENTED_SPLIT and not plan.augment.output.is_file():
            # not augmented yet: each training example gives itself and at most N new rows per text
            job = plan.augment
            sources = len(runner.dataset("train").head(job.max_examples or None))
            rows = sources * (1 + job.settings.n * (2 if job.task.is_pair else 1))
            n = min(rows, spec.max_examples) if spec.max_examples else rows
            at_most = n > sources  # the augmented file holds its sources at least: below that it is exact
        else:
            n = len(runner.dataset(spec.data).head(spec.max_examples or None))
        steps = phase_steps(n, spec)
        out.append(PhaseSize(phase, n, steps, _evaluations(runner, phase, steps), dev_rows, at_most))
    return out


def _clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_phase(runner, phase: PhasePlan, steps: int) -> Timing:
    """Run `steps` training steps of `phase` (an evaluate phase: none) on the first batches of its
    data, with fresh weights of the right shapes (a step takes as long whatever the values), the
    teacher running live (a phase that reads the teacher-output cache builds it once, about one
    teacher forward per example, and then steps faster than this), and time them and two
    evaluation batches."""
    plan, spec, run = runner.plan, phase.spec, runner.recipe.run
    backend = plan.backend
    teacher_state = runner._given_teacher()  # noqa: SLF001  (the runner's checked, completed teacher)
    step_times: list[float] = []
    if spec.kind == "evaluate":
        config = plan.teacher_config if spec.target == "teacher" else plan.student_config
        model = backend.load_model(config, teacher_state if spec.target == "teacher"
                                   else init_parameters(config, run.seed), plan.device)
    else:
        teacher = None
        if spec.kind == "teacher_finetune":
            config, state = plan.teacher_config, teacher_state
        else:
            config, state = plan.student_config, init_parameters(plan.student_config, run.seed)
            if phase.graph.needs_teacher:
                teacher = backend.load_model(plan.teacher_config, teacher_state, plan.device)
        split = "train" if spec.data == AUGMENTED_SPLIT else spec.data  # augmented rows are train-like
        data = runner.dataset(split).head(steps * spec.batch_size)
        model = backend.load_model(config, state, plan.device)
        trainer = backend.trainer(model, teacher, train_spec(plan, phase, steps))
        order = batch_order(data, spec.batch_size, shuffle=True, seed=run.seed + phase.index, epoch=0,
                            drop_last=False, batching=runner.recipe.data.batching)
        for rows in (order * math.ceil(steps / len(order)))[:steps]:
            batch = runner.shape(data.batch(rows))
            step_times.append(_clock(lambda batch=batch: trainer.step(batch)))
        del trainer, teacher
    eval_s = 0.0
    if plan.task is not None and runner.recipe.data.dev:
        dev, bs = runner.dataset("dev"), run.eval_batch_size
        rows = np.resize(np.arange(min(bs, len(dev))), bs)  # a full batch, as the runner pads its last
        batch = runner.shape(dev.batch(rows))
        _clock(lambda: model.predict(batch))  # a compiled backend builds its evaluation graph here
        eval_s = _clock(lambda: model.predict(batch))
    del model
    gc.collect()
    release_caches(backend)
    rest = step_times[1:] or step_times
    return Timing(statistics.median(rest) if rest else 0.0, step_times[0] if step_times else 0.0, eval_s,
                  len(step_times))


def estimate(size: PhaseSize, timing: Timing, eval_batch_size: int) -> float:
    """Seconds the phase will take: its steps at the timed pace (the first at the first's), plus
    its evaluations at the timed batch's pace."""
    train = 0.0 if size.steps == 0 else timing.first_step_s + (size.steps - 1) * timing.step_s
    return train + size.evaluations * num_batches(size.dev_rows, eval_batch_size, drop_last=False) * timing.eval_batch_s


def human_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 07 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds) // 60
    if minutes < 60:
        return f"{minutes} min {round(seconds) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
