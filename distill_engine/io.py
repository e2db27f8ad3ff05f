"""Atomic writes: every file and directory the engine writes appears whole or not at all.

A file is written to a temporary sibling (".<name>.tmp-<pid>"), optionally fsynced, and renamed
over its target; a directory is filled as a temporary sibling (".<name>.tmp-<random>"), fsynced,
and swapped in (see `write_directory_atomically`). What a killed process leaves behind is tidied
by `recover_interrupted_writes` (run at the next start). The one module that calls `os.replace`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

TMP_MARK = ".tmp-"  # temporary sibling: ".<name>.tmp-<pid>" (a file) or ".<name>.tmp-<random>" (a directory)
OLD_MARK = ".old"  # the previous version during a directory swap: ".<name>.old"


def temporary_sibling(path: Path, *, keep_suffix: bool = False) -> Path:
    """The temporary name `path` is written under before its rename: ".<name>.tmp-<pid>", or with
    `keep_suffix` ".<stem>.tmp-<pid><suffix>" (for writers that add or need the suffix)."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def write_atomically(path: Path, write: Callable[[Path], T], *, fsync: bool = True, keep_suffix: bool = False,
                     user_mode: bool = False) -> T:
    """`write(tmp)` to a temporary sibling of `path`, then rename it into place (never half a file);
    returns what `write` returned. `fsync`: the data is on disk before the rename makes it visible;
    `user_mode`: the file gets the user's usual mode first (some writers create 0400 files).
    The parent directory is created; the temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, keep_suffix=keep_suffix)
    try:
        result = write(tmp)
        if user_mode:
            os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return result


def write_text_atomically(path: Path, text: str, *, encoding: str | None = "utf-8", fsync: bool = True) -> None:
    """`text` written to `path` atomically (see `write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding=encoding), fsync=fsync)


def write_bytes_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """`data` written to `path` atomically (see `write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def write_json_atomically(path: Path, doc, *, fsync: bool = True, **dumps) -> None:
    """`doc` as JSON (`json.dumps(doc, **dumps)`, by default indented by 2, unknown types as
    `str`) written to `path` atomically: readers never see half a file."""
    dumps = {"indent": 2, "default": str, **dumps}
    write_text_atomically(path, json.dumps(doc, **dumps), encoding=None, fsync=fsync)


def write_directory_atomically(path: Path, fill: Callable[[Path], object]) -> Path:
    """Create directory `path` through `fill(tmp)` on a temporary sibling, then swap it in.

    The data is fsynced before it becomes visible. Replacing an existing directory takes two
    renames (old -> ".<name>.old", tmp -> name); a kill between them leaves ".<name>.old" and no
    `path`, which `recover_interrupted_writes` (run at the next start) renames back, so the
    previous version (e.g. a phase's `best`) is never lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent))
    try:
        fill(tmp)
        # mkdtemp (and safetensors) create private modes; a checkpoint gets the user's usual ones
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():  # data on disk before the rename makes it visible
            os.chmod(f, 0o666 & ~umask)
            fsync_file(f)
        if path.exists():
            old = path.with_name(f".{path.name}{OLD_MARK}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def recover_interrupted_writes(root: Path) -> list[str]:
    """Undo what a killed writer left under `root` (any depth): temporary ".<name>.tmp-*" files
    and directories are deleted; a ".<name>.old" whose `<name>` is missing is renamed back (the
    kill fell between the two renames of a directory swap), otherwise deleted. Returns what it
    did, one line each, for the log."""
    done: list[str] = []
    root = Path(root)
    if not root.is_dir():
        return done
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:  # half-written files of write_atomically
            if name.startswith(".") and TMP_MARK in name:
                (Path(dirpath) / name).unlink(missing_ok=True)
                done.append(f"removed the unfinished write {Path(dirpath) / name}")
        for name in list(dirnames):
            full = Path(dirpath) / name
            if not name.startswith("."):
                continue
            if TMP_MARK in name:
                shutil.rmtree(full, ignore_errors=True)
                dirnames.remove(name)
                done.append(f"removed the unfinished write {full}")
            elif name.endswith(OLD_MARK):
                target = full.with_name(name[1: -len(OLD_MARK)])
                if target.exists():
                    shutil.rmtree(full, ignore_errors=True)
                    done.append(f"removed the superseded {full}")
                else:
                    os.replace(full, target)
                    done.append(f"restored {target} (a swap was interrupted)")
                dirnames.remove(name)
    return done


def fsync_file(path: Path) -> None:
    """The file's data on disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """The directory's entries on disk (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)
