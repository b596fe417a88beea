"""Every output write goes through here: atomic (temporary file in the same folder, fsync, rename;
the temporary file removed on any failure) and OS errors as one line naming the path."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from glob import escape as glob_escape
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vidssl.errors import VidsslError


class OutputError(VidsslError):
    """An output could not be written (disk full, read-only, permissions, a file where a folder is expected)."""


_ADVICE = {
    errno.ENOSPC: "no space left on the device; free space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free space or write elsewhere",
    errno.EFBIG: "the file is larger than this system allows here (file size limit); write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "permission denied; choose a writable output folder",
    errno.EPERM: "permission denied; choose a writable output folder",
    errno.EEXIST: "a file is in the way where a folder is expected; remove it or choose another output",
    errno.ENOTDIR: "a file is in the way where a folder is expected; remove it or choose another output",
    errno.EISDIR: "a folder is in the way where a file is expected; remove it or choose another output",
}


def output_error(path: Path | str, e: BaseException) -> OutputError:
    """The one-line form of a failed write of `path`."""
    code = getattr(e, "errno", None)
    if code in _ADVICE:
        return OutputError(f"cannot write {path}: {_ADVICE[code]}")
    # torch.save / safetensors report a failed write as RuntimeError; say how full the disk is.
    text = str(e).strip()
    if "inline_container" in text or "PytorchStreamWriter" in text:  # torch hides the OSError
        detail = "the write failed part way (disk full, or a file size limit)"
    else:
        detail = text.splitlines()[-1][:200] if text else type(e).__name__
    try:
        free = shutil.disk_usage(Path(path).parent if Path(path).parent.exists() else ".").free
        detail += f"; {free / 2**20:.0f} MiB free there"
    except OSError:
        pass
    return OutputError(f"cannot write {path}: {detail}")


def ensure_dir(path: Path | str) -> Path:
    """Create a folder (and its parents); one-line error if a file is in the way or it cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write {path}: it is an existing file, not a folder; remove it or choose another output")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the body returns, the file is fsynced and renamed
    onto `path`. A crash leaves the previous file (or none), never a torn one; a failure removes the
    temporary file and raises OutputError."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        # keep the suffix: PIL, PyAV and matplotlib choose the format from it
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.close(fd)
    except OSError as e:
        raise output_error(path, e) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, VidsslError):
            raise
        raise output_error(path, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def writable_dir(path: Path | str) -> Path:
    """`ensure_dir`, then prove the folder takes a file (a temporary one, removed at once): a
    read-only folder or a full disk is one OutputError naming `path` before any work is done."""
    path = ensure_dir(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".vidssl-write-test-", dir=path)
    except OSError as e:
        raise output_error(path, e) from None
    os.close(fd)
    os.unlink(probe)
    return path


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Delete the temporary files `atomic_path` left for `path` when a process was killed mid-write
    (SIGKILL skips the clean-up); the caller knows no write of `path` is in progress. Returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob_escape(path.stem)}.*.tmp{glob_escape(path.suffix)}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_open(path: Path | str, mode: str = "wb") -> Iterator[IO[Any]]:
    """`open(path, mode)` that replaces `path` only when the body completes (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write(path: Path | str, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` (for writers that want a path: safetensors, PyAV, PIL) atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: Path | str, obj: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_jsonl(path: Path | str) -> list[dict]:
    """The rows of a JSON-lines file (metrics.jsonl and the like); blank lines are skipped."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def drop_rows_after(path: Path | str, step: int) -> None:
    """Keep the rows of a JSON-lines log up to `step` (a resumed run writes the later ones again)."""
    if Path(path).is_file():
        rows = read_jsonl(path)
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) != len(rows):
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def write_npy(path: Path | str, array: Any) -> Path:
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return Path(path)


__all__ = ["OutputError", "atomic_open", "atomic_path", "atomic_write", "drop_rows_after", "ensure_dir", "read_jsonl", "output_error", "remove_stale_temporaries", "writable_dir", "write_json", "write_npy", "write_text"]
