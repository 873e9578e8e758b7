"""Writing results so that a crash at any moment leaves the old file or the new one, never a torn one.

Every file is written to a temporary sibling, flushed to disk, then moved over the target with `os.replace`
(atomic on POSIX). `results/runs.csv` is updated under an exclusive lock, so two studies writing to the same
results folder cannot lose each other's rows. Checkpoints hold only tensors and plain containers, and are read
back with `torch.load(weights_only=True)`: nothing in them is ever executed.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

CHECKPOINT_FORMAT = "nanogpt-imdb-classifier/1"


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(f"Cannot write {path}: {exc.strerror or exc}. Fix: check the folder exists, is "
                      "writable and the disk has space.") from exc
    try:
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


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return atomic_write_text(path, df.to_csv(index=False))


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; any other file gives one clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Fix: pass the model.pt of a finished run "
                                "(results/runs/<run_id>/model.pt).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or holds objects "
                              f"that are not plain tensors): {first[:300]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a checkpoint of this project (format {found!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}).")
    for key in ("model_state", "model_config", "loss"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'; it was not written by nanogpt.train.")
    return ckpt


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


def upsert_result_row(csv_path: str | Path, row: dict, key: str = "run_id") -> Path:
    """Add a row to a results CSV, replacing any earlier row with the same key, under a lock."""
    csv_path = Path(csv_path)
    with locked(csv_path):
        old = pd.read_csv(csv_path) if csv_path.is_file() and csv_path.stat().st_size > 0 else None
        new = pd.DataFrame([row])
        if old is not None and len(old):
            old = old[old[key].astype(str) != str(row[key])]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        return atomic_write_csv(csv_path, new)


def read_results(csv_path: str | Path, finished_only: bool = False) -> pd.DataFrame:
    """The results table; with finished_only, only runs that ended with a score (not failed ones)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return pd.DataFrame()
    runs = pd.read_csv(csv_path)
    return finished(runs) if finished_only else runs


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs that finished with a score; failed runs never count as an accuracy."""
    if runs.empty:
        return runs
    ok = runs["status"].fillna("ok").eq("ok") if "status" in runs.columns else pd.Series(True, index=runs.index)
    return runs[ok & runs["val_accuracy"].notna()].reset_index(drop=True)
