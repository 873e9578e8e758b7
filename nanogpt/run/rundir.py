"""A run's folder: every path of it, what it writes, whether it finished, and who is training it.

    <out_dir>/runs/<run_id>/model.pt             the classifier checkpoint (see TrainConfig.keep)
    <out_dir>/runs/<run_id>/meta.json            config, metrics, environment and the run's results row
    <out_dir>/runs/<run_id>/history.csv          the learning curve
    <out_dir>/runs/<run_id>/val_predictions.csv  P(positive) of every validation review
    <out_dir>/runs/<run_id>/state.pt             resumable state while the run is unfinished
    <out_dir>/runs/<run_id>/.claim               lock held by the process training the run (its pid inside)

The folder is the source of truth: a run has finished when its meta.json says so and its weights (if it
kept any) hash to what meta.json recorded. `results.py` keeps `runs.csv` as an index over the folders.
Every file is written atomically (see `artifacts`), so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.core.artifacts import atomic_write_csv, atomic_write_json, ensure_dir, file_sha256

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TEMP_SUFFIX = ".tmp"


class RunFolderError(ValueError):
    """A run id or folder that cannot be used (it would leave the results folder)."""


@dataclass(frozen=True)
class RunDir:
    out_dir: Path
    run_id: str

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if not isinstance(self.run_id, str) or not _RUN_ID.fullmatch(self.run_id) or ".." in self.run_id:
            raise RunFolderError(f"run id {self.run_id!r} is not a plain folder name (letters, digits, '_', '-', "
                                 "'.'); it would leave the results folder.")

    @property
    def path(self) -> Path:
        return self.out_dir / "runs" / self.run_id

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def val_predictions(self) -> Path:
        return self.path / "val_predictions.csv"

    @property
    def state(self) -> Path:
        return self.path / "state.pt"

    @property
    def claim_file(self) -> Path:
        return self.path / ".claim"

    # ------------------------------------------------------------------------------------- writing

    def write_history(self, history: pd.DataFrame) -> None:
        atomic_write_csv(self.history, history)

    def write_val_predictions(self, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
        df = pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "positive_probability": probs})
        atomic_write_csv(self.val_predictions, df)
        return df

    def write_meta(self, row: dict, **fields) -> None:
        """meta.json, with the run's results row: the index can always be rebuilt from the folders."""
        atomic_write_json(self.meta, {"run_id": self.run_id, **fields, "row": row,
                                      "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    # ------------------------------------------------------------------------------------- reading

    def read_meta(self) -> dict | None:
        """meta.json as a dict, or None when it is missing or unreadable."""
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("run_id") == self.run_id else None

    def finished_row(self) -> dict | None:
        """The results row of a run that finished and whose weights verify; None otherwise.

        Finished means: meta.json holds a row with status 'ok', and the weights it kept (model.pt) have the
        sha256 the row recorded. A truncated or replaced model.pt makes the run unfinished, so it is trained
        again. Older runs whose row has no hash count as finished when model.pt exists."""
        meta = self.read_meta()
        row = meta.get("row") if meta else None
        if not isinstance(row, dict) or row.get("status") != "ok":
            return None
        keep = row.get("keep") or "final"
        if keep == "none":
            return row
        expected = row.get("model_sha256")
        if not self.model.is_file():
            return None
        if expected and file_sha256(self.model) != expected:
            return None
        return row

    # ------------------------------------------------------------------------------------- claiming

    @contextlib.contextmanager
    def claim(self, wait: bool = False):
        """Hold this run's lock while training it; yields True if we hold it, False if another live process
        does (with wait=False). The lock is an flock on `.claim`: the kernel drops it when its holder dies,
        even by SIGKILL, so a stale claim is taken over by the next process that asks."""
        ensure_dir(self.path)
        with open(self.claim_file, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                raise
            try:
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def claimed_by(self) -> str:
        """The pid written by the last process that claimed the run (for messages)."""
        try:
            return self.claim_file.read_text().strip() or "?"
        except OSError:
            return "?"

    def clean_stale(self, finished: bool, keep: str = "final") -> list[Path]:
        """Remove what a killed process left: temporary files of interrupted writes, and, once the run has
        finished (unless it keeps everything), its resumable state. Call while holding the claim."""
        removed = [p for p in self.path.glob(f".*{TEMP_SUFFIX}")]
        if finished and keep != "all" and self.state.exists():
            removed.append(self.state)
        for p in removed:
            p.unlink(missing_ok=True)
        return removed


def run_dirs(out_dir: str | Path) -> list[RunDir]:
    """Every run folder under `<out_dir>/runs/`, by name."""
    root = Path(out_dir) / "runs"
    if not root.is_dir():
        return []
    return [RunDir(out_dir, p.name) for p in sorted(root.iterdir()) if p.is_dir() and _RUN_ID.fullmatch(p.name)]


def finished_run_ids(out_dir: str | Path) -> set[str]:
    """Ids of the runs whose folder shows them finished, with verified weights (see RunDir.finished_row)."""
    return {run.run_id for run in run_dirs(out_dir) if run.finished_row() is not None}
