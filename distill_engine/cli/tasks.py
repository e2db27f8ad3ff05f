"""`distill-engine tasks`: the task presets (data.task) with their columns, labels and metrics."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    sub.add_parser("tasks", help="list the task presets (data.task) with their columns, labels and metrics")


def command(_args) -> int:
    from distill_engine.data import TASKS

    def show(column) -> str:
        return "-" if column is None else (f"column {column}" if isinstance(column, int) else json.dumps(column))

    print("Presets of data.task (a recipe may define its own: data.task = { name, format, text_a, text_b, label, "
          "labels, metrics, header }; README, Your own task):")
    for task in TASKS.values():
        labels = ", ".join(task.labels) if task.labels else "regression (a real-valued score)"
        header = "" if task.header else "  (no header: columns by index)"
        print(f"{task.name}\n    format {task.format}{header}; text_a {show(task.text_a)}, text_b {show(task.text_b)}, "
              f"label {show(task.label)}\n    labels: {labels}\n    metrics: {', '.join(task.metrics)}")
    return 0
