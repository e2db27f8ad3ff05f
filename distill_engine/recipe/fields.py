"""Validators for recipe fields: numeric ranges, names, paths and other strings.

Each validator raises `FieldError(<field name>, <message>)`; the loader prefixes the dotted path
of the table ("phases[2].optimizer"), so every bad value becomes one line such as
`phases[2].optimizer.lr: nan is not a finite number; allowed: 0 < lr <= 1`.
A field's range is kept on the field (`range_of`), so the reference documentation and its
test read the same numbers the check uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import attrs

from distill_engine.errors import DistillError, FieldError

INT32_MAX = 2**31 - 1


def _fmt(value: float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def show(value: Any, limit: int = 60) -> str:
    """A value as it appears in a message: repr, shortened."""
    text = _fmt(value) if isinstance(value, (int, float)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@attrs.frozen
class Range:
    """Allowed values of a number: `lo`..`hi` (either side may be open or absent); `off`: 0 is
    allowed too (it turns the feature off); `finite`: nan and inf are refused."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    off: bool = False

    def contains(self, value: float) -> bool:
        if self.off and value == 0:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or self.lo_open and value == self.lo):
            return False
        return not (self.hi is not None and (value > self.hi or self.hi_open and value == self.hi))

    def describe(self, name: str) -> str:
        """E.g. "0 <= dropout < 1", "lr > 0", "0 (off) or factor > 1"."""
        lo = None if self.lo is None else f"{_fmt(self.lo)} {'<' if self.lo_open else '<='} "
        hi = None if self.hi is None else f" {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        if lo is not None and hi is not None:
            text = f"{lo}{name}{hi}"
        elif lo is not None:
            text = f"{name} {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        elif hi is not None:
            text = f"{name}{hi}"
        else:
            text = f"{name} finite"
        return f"0 (off) or {text}" if self.off else text

    def check(self, name: str, value: Any, field: str | None = None) -> None:
        """Raise FieldError(field or name) unless `value` is a number in range (None passes)."""
        if value is None:
            return
        field = field or name
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldError(field, f"{show(value)} is not a finite number; allowed: {self.describe(name)}")
        if not self.contains(value):
            raise FieldError(field, f"{show(value)} is out of range; allowed: {self.describe(name)}")

    def __call__(self, _instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        self.check(attribute.name, value)


@attrs.frozen
class Each:
    """Every item of a tuple field is within `range` (reported as `field[i]`)."""

    range: Range

    def __call__(self, _instance: Any, attribute: attrs.Attribute, value: Sequence) -> None:
        for i, item in enumerate(value):
            self.range.check(f"{attribute.name}[i]", item, field=f"{attribute.name}[{i}]")


def number(default: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, off: bool = False) -> Any:
    """An attrs field holding a number in a range (see `Range`)."""
    rng = Range(lo, hi, lo_open, hi_open, off)
    return attrs.field(default=default, validator=rng, metadata={"range": rng})


def numbers(default: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False) -> Any:
    """An attrs field holding a tuple of numbers, each in a range."""
    rng = Range(lo, hi, lo_open, hi_open)
    return attrs.field(default=default, validator=Each(rng), metadata={"range": rng, "each": True})


def range_of(attribute: attrs.Attribute) -> Range | None:
    return attribute.metadata.get("range")


def describe_range(attribute: attrs.Attribute) -> str | None:
    """The allowed values of a numeric field as its errors say them ("0 < lr <= 1")."""
    rng = range_of(attribute)
    if rng is None:
        return None
    return rng.describe(f"{attribute.name}[i]" if attribute.metadata.get("each") else attribute.name)


# --------------------------------------------------------------------------- strings

def not_empty(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "is empty")


def no_nul(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    """A path may hold any character but NUL (which no file system accepts)."""
    if "\0" in value:
        raise FieldError(attribute.name, f"{show(value)} holds a NUL character; not a usable path")


def one_of(choices: Sequence[str]):
    def check(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            from distill_engine.errors import did_you_mean

            raise FieldError(attribute.name, f"{show(value)} is not one of {', '.join(choices)}"
                                             f"{did_you_mean(value, choices)}")

    return check


def parses(parse, what: str):
    """The string parses with `parse` (which raises a DistillError naming the problem)."""

    def check(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
        try:
            parse(value)
        except DistillError as exc:
            raise FieldError(attribute.name, str(exc)) from None

    check.__doc__ = f"a valid {what}"
    return check


# Phase names become folder names inside the run directory, so they are kept to one safe path
# component: letters, digits, "_" and "-" (not first), at most 64 characters. Names the run
# directory uses for itself are reserved ("state" holds the run-state checkpoints; anything
# starting with "." is excluded by the pattern).
PHASE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
RESERVED_PHASE_NAMES = ("state",)


def phase_name(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not PHASE_NAME.fullmatch(value):
        raise FieldError(attribute.name, f"{show(value)} is not a valid phase name: use 1-64 letters, digits, "
                                         '"_" or "-" (not first); it names a folder in the run directory')
    if value.lower() in RESERVED_PHASE_NAMES:
        raise FieldError(attribute.name, f'"{value}" is reserved (the run directory uses it for itself); '
                                         "choose another phase name")


def smaller_cap(a: int, b: int) -> int:
    """The tighter of two caps where 0 means none (a phase's max_steps and run.max_steps)."""
    return min(a, b) if a and b else a or b
