"""`distill-engine tasks`: the task types, the metrics and the task presets (data.task)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    sub.add_parser("tasks", help="list the task types, the metrics and the task presets (data.task)")


def command(_args) -> int:
    from distill_engine.data import TASKS
    from distill_engine.tasks.metrics import METRICS
    from distill_engine.tasks.registry import TASK_TYPES

    def show(column) -> str:
        return "-" if column is None else (f"column {column}" if isinstance(column, int) else json.dumps(column))

    print("Task types (data.task.type; a plugin adds one through register_task_types):")
    for name, task_type in TASK_TYPES.all().items():
        presets = ", ".join(task_type.presets()) or "none"
        print(f"{name}\n    {task_type.description}\n    head {task_type.head}; presets: {presets}; "
              f"from plugin {TASK_TYPES.owner(name)}")
    print("\nMetrics (a task's metrics = [...]; the first ranks checkpoints; a plugin adds one through "
          "register_metrics):")
    for name, metric in METRICS.all().items():
        print(f"{name}\n    {metric.summary}; scores {metric.applies_to}; from plugin {METRICS.owner(name)}")
    print("\nPresets of data.task (a recipe may define its own: data.task = { name, format, text_a, text_b, label, "
          "labels, metrics, header }; docs/tasks.md):")
    for task in TASKS.values():
        labels = ", ".join(task.labels) if task.labels else "regression (a real-valued score)"
        header = "" if task.header else "  (no header: columns by index)"
        print(f"{task.name}\n    format {task.format}{header}; text_a {show(task.text_a)}, text_b {show(task.text_b)}, "
              f"label {show(task.label)}\n    labels: {labels}\n    metrics: {', '.join(task.metrics)}")
    # the other types' presets (the token type's conll2003), as their definitions describe themselves
    for name, task_type in TASK_TYPES.all().items():
        for preset in task_type.presets().values():
            if preset in TASKS.values():
                continue
            table = {k: v for k, v in preset.describe().items() if k != "name"}
            print(f"{preset.name}\n    type {name}; " + "; ".join(
                f"{k} {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in table.items()))
    return 0
