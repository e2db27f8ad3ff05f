"""The engine's own error types: every user-facing failure is one of these, with one clear line.

The CLI catches `DistillError`, prints its message as a single line and exits non-zero, so a
message must name the field, file or value at fault (never rely on a traceback to say it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistillError(Exception):
    """Base of every error the engine raises on purpose (bad input, missing file, bad state)."""

    exit_code = 2


class RecipeError(DistillError):
    """A recipe (TOML or --set override) is invalid: unknown key, wrong type, bad value."""


class DataError(DistillError):
    """A data file is missing or malformed; the message names the file (and line when known)."""


class CheckpointError(DistillError):
    """A checkpoint is missing, malformed, or its tensors do not match the model."""


class BackendError(DistillError):
    """An unknown backend, a backend that cannot do what was asked, or a failing plugin."""


class DeviceError(BackendError):
    """A device string that does not parse, or a device the chosen backend cannot serve."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name(kind: str, value: str, choices: Iterable[str]) -> str:
    """One-line message for a name a user typed that is not registered, listing what is."""
    choices = sorted(choices)
    listed = ", ".join(choices) if choices else "none"
    return f'unknown {kind} "{value}"{did_you_mean(value, choices)}; available: {listed}'
