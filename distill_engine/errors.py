"""The engine's own error types: every user-facing failure is one of these, with one clear line.

The CLI catches `DistillError`, prints its message as a single line and exits non-zero, so a
message must name the field, file or value at fault (never rely on a traceback to say it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistillError(Exception):
    """Base of every error the engine raises on purpose (bad input, missing file, bad state).

    Its text is always one line: a line break that came in with a value (a path, a key, a
    plugin's message) is shown escaped, so `error: ...` on stderr stays a single line.
    """

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class RecipeError(DistillError):
    """A recipe (TOML or --set override) is invalid: unknown key, wrong type, bad value."""


class FieldError(RecipeError, ValueError):
    """One recipe field holds a bad value (out of range, not finite, not a valid name, ...).

    Raised by the schema's validators with the field's name relative to its table; the loader
    prefixes the table's dotted path, so the user reads "phases[2].optimizer.lr: ...".
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataError(DistillError):
    """A data file is missing or malformed; the message names the file (and line when known)."""


class CheckpointError(DistillError):
    """A checkpoint is missing, malformed, or its tensors do not match the model."""


class BackendError(DistillError):
    """An unknown backend, a backend that cannot do what was asked, or a failing plugin."""


class DeviceError(BackendError):
    """A device string that does not parse, or a device the chosen backend cannot serve."""


# every character str.splitlines() breaks at, each with its escape
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode("ascii")
                for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """`text` with its line breaks escaped (a newline becomes backslash-n): an error is one line."""
    return text.translate(_LINE_BREAKS)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name(kind: str, value: str, choices: Iterable[str]) -> str:
    """One-line message for a name a user typed that is not registered, listing what is."""
    choices = sorted(choices)
    listed = ", ".join(choices) if choices else "none"
    return f'unknown {kind} "{value}"{did_you_mean(value, choices)}; available: {listed}'
