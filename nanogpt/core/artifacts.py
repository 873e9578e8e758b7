"""Writing files so that a crash at any moment leaves the old file or the new one, never a torn one.

Every file is written to a temporary sibling, flushed to disk, then moved over the target with `os.replace`
(atomic on POSIX). Shared files are updated under an exclusive lock (`locked`). Standard library only, so
every module may use it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import numbers
import os
import tempfile
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, computed once per (path, size, modification time): studies ask for
    the same data file and checkpoints many times."""
    path = Path(path)
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_mode() -> int:
    """Permissions a plain `open(path, "w")` would give here (mkstemp's own are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def stable_digest(obj, length: int) -> str:
    """The first `length` hex digits of the SHA-256 of `obj` as canonical JSON (keys sorted): the same
    content always gives the same digest, whatever the order it was built in."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def ensure_dir(path: str | Path) -> Path:
    """mkdir -p, with an error that names the folder and the fix."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"Cannot write {path}: {exc.strerror or exc}. Fix: check the folder exists, is writable "
                      "and the disk has space, or choose another --out folder.") from exc
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(f"Cannot write {path}: {exc.strerror or exc}. Fix: check the folder exists, is "
                      "writable and the disk has space.") from exc
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(f"Cannot write {path}: {exc.strerror or exc}. Fix: free disk space or choose "
                          "another --out folder.") from exc
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(obj):
    """`obj` (JSON-like) with every non-finite float (NaN, infinity: a mean of nothing, a sd of one run) as None,
    so the file is JSON that any strict reader accepts (null), not Python's `NaN` extension."""
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):  # numpy's floats too
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON with sorted keys; non-finite floats are written as null (`finite_json`)."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def rounded(obj, significant: int = 8):
    """`obj` (JSON-like) with every float rounded to `significant` digits: what two processors agree on."""
    if isinstance(obj, float):
        return float(f"{obj:.{significant}g}") if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {str(k): rounded(v, significant) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, significant) for v in obj]
    return obj


def write_report_json(path: str | Path, obj, significant: int = 8) -> bool:
    """Write a report atomically unless the file there already says the same to `significant` digits: a report
    regenerated on another processor, whose floats differ in their last bits only, leaves the committed file
    untouched (no diff in git). True when the file was written."""
    path = Path(path)
    new = json.loads(json.dumps(finite_json(obj), sort_keys=True, default=str, allow_nan=False))
    try:
        if rounded(json.loads(path.read_text()), significant) == rounded(new, significant):
            return False
    except (OSError, ValueError):
        pass
    atomic_write_json(path, new)
    return True


def atomic_write_csv(path: str | Path, df) -> Path:
    """A pandas DataFrame as CSV, without its index."""
    return atomic_write_text(path, df.to_csv(index=False))


@contextlib.contextmanager
def locked(path: str | Path):
    """An exclusive advisory lock on `<path>.lock`, held for the block."""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


