"""Validators of the fields task-type definitions share (attrs validators raising `FieldError`)."""

from __future__ import annotations

import json

from distill_engine.data.tasks import TASK_NAME
from distill_engine.errors import FieldError


def task_name(_instance, _attribute, value) -> None:
    """A task's name: letters, digits, _ . - (not first); at most 64."""
    if not isinstance(value, str) or not TASK_NAME.fullmatch(value):
        raise FieldError("name", f"{value!r} is not a task name (letters, digits, _ . -; at most 64)")


def one_of(options):
    """A validator: the value is one of `options` (the message lists them)."""
    def check(_instance, attribute, value) -> None:
        if value not in options:
            shown = json.dumps(value) if isinstance(value, str) else repr(value)
            raise FieldError(attribute.name, f"{shown} is not one of {', '.join(options)}")
    return check


def find_preset(presets: dict, name: str):
    """The preset `name` means, ignoring case and punctuation ("CoNLL-2003" is "conll2003"), or None."""
    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    return next((t for n, t in presets.items() if key(n) == key(name)), None)
