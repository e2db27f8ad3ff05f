"""distill_engine.io: atomic files and directories (no framework)."""

import os
import stat

import pytest

from distill_engine.io import (TMP_MARK, recover_interrupted_writes, temporary_sibling, write_atomically,
                               write_bytes_atomically, write_directory_atomically, write_json_atomically,
                               write_text_atomically)


def test_files_appear_whole_and_leave_no_temporary(tmp_path):
    write_text_atomically(tmp_path / "a" / "t.txt", "héllo\n")
    write_bytes_atomically(tmp_path / "b.bin", b"\0\1")
    write_json_atomically(tmp_path / "c.json", {"x": 1})
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert (tmp_path / "c.json").read_text() == '{\n  "x": 1\n}'
    assert not [p for p in tmp_path.rglob("*") if TMP_MARK in p.name]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_suffix_kept_result_returned_and_user_mode(tmp_path):
    target = tmp_path / "m.ckpt"
    assert temporary_sibling(target, keep_suffix=True).name == f".m{TMP_MARK}{os.getpid()}.ckpt"

    def write(tmp):
        assert tmp.suffix == ".ckpt"
        tmp.write_text("w")
        os.chmod(tmp, 0o400)
        return 7

    assert write_atomically(target, write, keep_suffix=True, user_mode=True) == 7
    assert stat.S_IMODE(target.stat().st_mode) & 0o200


def test_directories_swap_and_interrupted_writes_are_tidied(tmp_path):
    write_directory_atomically(tmp_path / "d", lambda tmp: (tmp / "x").write_text("1"))
    write_directory_atomically(tmp_path / "d", lambda tmp: (tmp / "x").write_text("2"))
    assert (tmp_path / "d" / "x").read_text() == "2"
    (tmp_path / f".f.txt{TMP_MARK}123").write_text("half")
    (tmp_path / ".e.old").mkdir()
    done = recover_interrupted_writes(tmp_path)
    assert len(done) == 2 and (tmp_path / "e").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "e"]
