"""Reading a user's text file whole, with every failure one line naming the file (and line)."""

from __future__ import annotations

from pathlib import Path

from distill_engine.errors import DataError, DistillError


def read_text(path, what: str, *, bom: bool = False, error: type[DistillError] = DataError) -> str:
    """The UTF-8 text of `path` (a leading BOM dropped when `bom`). `what` says what the file is
    ("GLUE file", "corpus file") in the messages, raised as `error`: not found, a folder,
    unreadable, or not UTF-8 (named as `file:line` with the byte offset of the first bad byte)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a {what}") from None
    except (OSError, ValueError) as exc:  # permissions, a NUL in the name, ...
        raise error(f"{path}: cannot read the {what} ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    try:
        return raw.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if bom and raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        raise error(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {start}); "
                    f"a {what} must be UTF-8 text") from None


def json_lines(path, text: str):
    """(line number, parsed value) of each non-blank line of a JSON Lines `text` read from `path`,
    split on "\\n" only (str.splitlines() would also cut at \\x1c or \\u2028 inside a string, and the
    line numbers in messages would no longer be the editor's); a line that is not JSON is one
    `DataError` naming `file:line`."""
    import json

    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
