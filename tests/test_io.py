"""vidssl.io: atomic writes leave the old file or the new one, never a temporary; OS errors are one line."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from vidssl.io import OutputError, atomic_open, ensure_dir, output_error, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    path = write_text(tmp_path / "out.json", "old\n")
    with pytest.raises(ZeroDivisionError), atomic_open(path, "w") as f:
        f.write("half of the new")
        1 / 0
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_follow_the_umask_not_mkstemps_private_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == '{\n "x": 1\n}\n'


def test_os_errors_are_one_line_naming_the_path(tmp_path) -> None:
    e = output_error(tmp_path / "c.pt", OSError(errno.ENOSPC, "No space left on device"))
    assert str(e) == f"cannot write {tmp_path / 'c.pt'}: no space left on the device; free space or write elsewhere"
    blocker = write_text(tmp_path / "run", "a file\n")
    with pytest.raises(OutputError, match=f"^cannot write {blocker}: it is an existing file, not a folder"):
        ensure_dir(blocker)
    with pytest.raises(OutputError, match=f"^cannot write {blocker}: it is an existing file"):  # names the blocker
        write_text(blocker / "x.json", "{}")
