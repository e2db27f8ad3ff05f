"""The task-type registry, and a recipe's `data.task` resolved to a definition of a registered type.

Task types register through the `register_task_types` hook (the built-in "sequence" type through
the same hook, `distill_engine.tasks.builtin`). A task *definition* is an instance of its type's
`definition` class; `task_type_of` finds the type of a definition, `find_task` a preset by name
across every type, `structure_task` a `[data.task]` table (its `type` key picks the type).
"""

from __future__ import annotations

from typing import Any

from distill_engine.errors import DataError, RecipeError
from distill_engine.registries import HookRegistry
from distill_engine.tasks.base import HEADS, TaskType

DEFAULT_TYPE = "sequence"
_METHODS = ("presets", "preset", "read", "encode", "num_outputs", "default_losses", "label_source", "evaluate",
            "write_predictions")


def _check(obj: Any) -> str | None:
    missing = [m for m in ("name", "description", "definition", "head", "submission_format", *_METHODS) if not hasattr(obj, m)]
    if missing:
        return f"{type(obj).__name__} is not a task type: it lacks {', '.join(missing)} (distill_engine.tasks.TaskType)"
    if obj.head not in HEADS:
        return f'task type "{obj.name}" asks for head "{obj.head}"; the models have {", ".join(HEADS)}'
    return None


TASK_TYPES = HookRegistry("register_task_types", "task type", _check)


def task_types() -> dict[str, TaskType]:
    """Every registered task type by name (built-ins first)."""
    return TASK_TYPES.all()


def get_task_type(name: str, where: str = "") -> TaskType:
    """The task type called `name`; unknown: a `RecipeError` listing the registered ones."""
    return TASK_TYPES.get(name, RecipeError, where)


def task_type_of(task: Any) -> TaskType:
    """The registered type whose definition `task` is."""
    for task_type in task_types().values():
        if isinstance(task, task_type.definition):
            return task_type
    raise RecipeError(f"{type(task).__name__} is not the definition of a registered task type "
                      f"(registered: {', '.join(task_types())})")


def find_task(name: str) -> Any:
    """The preset called `name`, from whichever task type has it; unknown: one `DataError` listing them all."""
    for task_type in task_types().values():
        found = task_type.preset(name)
        if found is not None:
            return found
    from distill_engine.errors import unknown_name

    presets = [p for t in task_types().values() for p in t.presets()]
    raise DataError(unknown_name("task", name, presets) + "; or define one: data.task = { name = ..., "
                    "format = ..., text_a = ..., label = ..., labels = [...] } (`distill-engine tasks`)")


def resolve_task(value: Any) -> Any:
    """A recipe's data.task: a preset's name, a definition, or nothing ("" or None: no task)."""
    if value is None or value == "":
        return None
    return find_task(value) if isinstance(value, str) else value


def split_type(table: dict) -> tuple[TaskType, dict]:
    """A `[data.task]` table's type (its `type` key, default "sequence") and the table without it."""
    table = dict(table)
    name = table.pop("type", DEFAULT_TYPE)
    if not isinstance(name, str):
        raise RecipeError(f"type: expected a task type's name, got {name!r}")
    return get_task_type(name, "type"), table


def describe_task(task: Any) -> dict:
    """A definition as a recipe's `[data.task]` table writes it (with `type` unless it is the default)."""
    task_type = task_type_of(task)
    out = dict(task.describe())
    return out if task_type.name == DEFAULT_TYPE else {"type": task_type.name, **out}
