"""Every pluggy hook of distill-engine: one documented function each.

A plugin is any module or object with functions marked `@distill_engine.hookimpl` of these
names. Installed plugins are found through the entry-point group "distill_engine.backends";
built-in parts register through the same hooks. Plugins add things by calling the `register`
callback they are given (not by returning values), so name checks live in one place.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("distill_engine")
hookimpl = pluggy.HookimplMarker("distill_engine")


@hookspec
def register_backends(register):
    """Called once, when the backend registry is first needed (listing backends, or a run).

    Call `register(name, factory, description="", probe=None)` once per backend this plugin
    provides. `name` is what users type after `--backend`; `factory` is a zero-argument callable
    that returns an object implementing `distill_engine.backend.Backend`. The factory is only
    called when that backend is used, so a plugin's module must not import its framework at top
    level. `probe` (optional) is a zero-argument callable that says what `distill-engine backends`
    prints without importing the framework: `BackendSummary(version, devices)` exactly as the
    backend's `version()` and `available_devices()` would give them, or None when it cannot know
    without the framework (the backend is then started). Return nothing.
    """


@hookspec
def register_weight_readers(register):
    """Called once, when a checkpoint file is first read.

    Call `register(suffix, reader, description="")` for each weight-file format this plugin can
    read: `suffix` is the file ending (".bin", ".ckpt"), `reader(path)` returns
    `dict[str, numpy.ndarray]` of the file's tensors under the file's own names. A reader must
    never execute code from the file (no unrestricted pickle). Return nothing.
    """


@hookspec(firstresult=True)
def load_foreign_checkpoint(path, fmt):
    """Called when a recipe names a checkpoint in a format the core does not read itself
    (`fmt`, e.g. "mindspore"); `path` is the file or directory as the user gave it.

    Return a `distill_engine.checkpoint.Checkpoint` (canonical names, float32 numpy) if this
    plugin reads `fmt`, or None to let another plugin try. Raise `CheckpointError` naming the
    file and the missing or unexpected tensors when the file is of this format but unusable.
    """


@hookspec
def register_losses(register):
    """Called once, when the loss registry is first needed (reading a recipe, `distill-engine
    losses`, building a phase's objective).

    Call `register(definition)` once per loss kind this plugin provides: `definition` is a
    `distill_engine.losses.LossDefinition` (its name, what it reads, its parameters, its exact
    formula and its numpy reference). Names are what recipes write in `kind = "..."`; a name
    registered twice is an error naming both plugins. Return nothing.
    """


@hookspec
def register_loss_implementations(register):
    """Called once, when the loss implementations are first needed (validating a recipe for a
    backend, building a trainer).

    Call `register(loss, backend, implementation)` for each loss kind this plugin implements on a
    backend: `loss` the kind's name, `backend` the backend's registered name, `implementation`
    the function itself or a "module:attribute" string (imported on first use, so a plugin need
    not import a framework at load time). It is called as `implementation(student, teacher, mask,
    labels, params)` with the backend's tensors (distill_engine.losses.definition says what each
    argument holds) and returns a scalar tensor. A backend plugin registers its built-in losses
    here; a loss plugin registers its own for the backends it supports. The first registration
    of a (loss, backend) pair wins. Return nothing.
    """


@hookspec
def register_task_types(register):
    """Called once, when the task-type registry is first needed (reading a recipe's data.task,
    `distill-engine tasks`, a run).

    Call `register(task_type)` once per task type this plugin provides: an object implementing
    `distill_engine.tasks.base.TaskType` (its name, which recipes write as `data.task.type`; the
    class of its `[data.task]` tables; its presets; reading, encoding, evaluating and writing
    predictions). The built-in "sequence" type registers through this hook too. A name registered
    twice is an error naming both plugins. Return nothing.
    """


@hookspec
def register_metrics(register):
    """Called once, when the metric registry is first needed (a task naming a metric outside the
    built-ins, an evaluation, `distill-engine tasks`).

    Call `register(definition)` once per metric: a `distill_engine.tasks.metrics.MetricDefinition`
    (its name, which tasks write in `metrics = [...]`; `function(predictions, gold)` returning a
    higher-is-better float computed per example; `applies_to`, the kind of prediction it scores:
    "classification", "regression", or a task type's own). A name registered twice is an error
    naming both plugins. Return nothing.
    """


@hookspec
def register_model_families(register):
    """Called once, when the model-family registry is first needed (reading a checkpoint's config,
    planning a run, `distill-engine models`).

    Call `register(family)` once per encoder family this plugin provides: an object implementing
    `distill_engine.models.family.ModelFamily` (its name; its config class; the Hugging Face
    `model_type` values it reads; config.json both ways; parameter names, shapes and
    initialisation; Hugging Face tensor names in and out; its numpy reference forward; the taps
    it offers). BERT registers through this hook too. A name registered twice is an error naming
    both plugins. Return nothing.
    """


@hookspec
def register_model_implementations(register):
    """Called once, when a backend first builds a model (`Backend.load_model`) or `distill-engine
    models` lists the backends of each family.

    Call `register(family, backend, implementation)` for each model family this plugin can build on
    a backend: `family` the family's registered name, `backend` the backend's, `implementation`
    the function itself or a "module:attribute" string (imported on first use, so that loading the
    plugin imports no framework). It is called as `implementation(config, state, device)` and
    returns the backend's `Model` holding exactly `state` (canonical names) on `device`, whose
    forward yields every tap the family offers (the backend's trainer reads them). The first
    registration of a (family, backend) pair wins. Return nothing.
    """
