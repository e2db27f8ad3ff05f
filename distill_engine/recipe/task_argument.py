"""A task given as one value: a preset's name, an inline TOML table, or a recipe .toml (its data.task).

The one parser of a `--task` value, for the command line and the library alike (`predict.task_of`,
`distill_engine.load(..., task=...)`). A table is checked exactly as a recipe's data.task is.
"""

from __future__ import annotations

from pathlib import Path

from distill_engine.data.tasks import Task, get_task, resolve_task
from distill_engine.errors import DataError, RecipeError
from distill_engine.recipe.loader import load_recipe, parse_value, structure


def task_from_table(table: dict, source: str = "task") -> Task:
    """A task defined by a table (a dict), checked as a recipe's data.task (errors name `source`)."""
    return structure({"phases": [{"name": "x", "kind": "evaluate"}], "data": {"task": table}},
                     source=source).data.task


def parse_task_argument(text: str) -> Task:
    """--task: a preset's name, an inline TOML table, or a recipe file (its data.task)."""
    if text.endswith(".toml"):
        recipe = load_recipe(Path(text))
        if not recipe.data.task:
            raise RecipeError(f"--task {text}: the recipe has no data.task")
        return resolve_task(recipe.data.task)
    value = parse_value(text)
    if isinstance(value, dict):
        try:
            return task_from_table(value, source="--task")
        except RecipeError as exc:
            raise RecipeError(str(exc).replace("--task: data.task", "--task")) from None
    if not isinstance(value, str):
        raise DataError(f"--task {text}: expected a task preset's name, a TOML table or a recipe .toml")
    return get_task(value)
