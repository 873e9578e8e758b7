"""Where a run's files live, and the results index that lists the runs.

Every path of a run is spelled once, here:

    <out_dir>/runs.csv                           one row per run (the index), updated under a lock
    <out_dir>/runs/<run_id>/model.pt             the classifier checkpoint
    <out_dir>/runs/<run_id>/meta.json            config, metrics, environment
    <out_dir>/runs/<run_id>/history.csv          the learning curve
    <out_dir>/runs/<run_id>/val_predictions.csv  P(positive) of every validation review
    <out_dir>/runs/<run_id>/state.pt             resumable state while the run is unfinished

Every file is written atomically (see `artifacts`), so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.artifacts import atomic_write_csv, atomic_write_json, locked


def runs_csv(out_dir: str | Path) -> Path:
    return Path(out_dir) / "runs.csv"


@dataclass(frozen=True)
class RunDir:
    out_dir: Path
    run_id: str

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))

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

    def write_history(self, history: pd.DataFrame) -> None:
        atomic_write_csv(self.history, history)

    def write_val_predictions(self, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
        df = pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "positive_probability": probs})
        atomic_write_csv(self.val_predictions, df)
        return df

    def write_meta(self, **fields) -> None:
        atomic_write_json(self.meta, {"run_id": self.run_id, **fields,
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


# ------------------------------------------------------------------------------------------- the index


def result_row(cfg, run_id: str, n_train: int, n_val: int, device: str, precision: str, status: str,
               **numbers) -> dict:
    """One row of runs.csv for a run of `cfg` (a TrainConfig): what produced it, and its numbers (NaN until
    given). A failed run has status 'failed', an error and no accuracy, so it can never enter a comparison."""
    import torch

    row = {"run_id": run_id, "status": status, "loss": cfg.loss, "seed": cfg.seed, "profile": cfg.profile,
           "source": cfg.source, "split_seed": cfg.split_seed, "n_train": n_train, "n_val": n_val,
           "val_accuracy": float("nan"), "val_loss": float("nan"), "roc_auc": float("nan"), "ece": float("nan"),
           "f1": float("nan"), "steps": cfg.max_steps, "train_seconds": float("nan"),
           "tokens_per_second": float("nan"), "device": device, "precision": precision,
           "torch_version": torch.__version__, "config": json.dumps(asdict(cfg), sort_keys=True), "error": ""}
    row.update(numbers)
    return row


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


def finished_run_ids(out_dir: str | Path) -> set[str]:
    """Ids of the runs in the index that finished with a score and still have their checkpoint."""
    runs = read_results(runs_csv(out_dir), finished_only=True)
    if runs.empty:
        return set()
    return {rid for rid in runs["run_id"].astype(str) if RunDir(out_dir, rid).model.is_file()}


# ------------------------------------------------------------------------------------------- readers


def load_histories(results_dir: str | Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Learning curves of the given runs, long format, with run_id, loss and seed columns."""
    frames = []
    for _, r in runs.iterrows():
        path = RunDir(results_dir, str(r["run_id"])).history
        if path.is_file():
            frames.append(pd.read_csv(path).assign(run_id=r["run_id"], loss=r["loss"], seed=r["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_val_predictions(results_dir: str | Path, run_id: str) -> pd.DataFrame:
    """P(positive) of every validation review for one run: read from `val_predictions.csv`, or, for runs
    that predate it, computed once from the checkpoint (inference only) and saved beside it."""
    run = RunDir(results_dir, str(run_id))
    if run.val_predictions.is_file():
        return pd.read_csv(run.val_predictions)
    from nanogpt.checkpoints import load_checkpoint, model_from_checkpoint
    from nanogpt.data import load_tokenized
    from nanogpt.evaluate import positive_probabilities
    from nanogpt.runtime import resolve_device, resolve_precision

    ckpt = load_checkpoint(run.model)
    cfg = ckpt["train_config"]
    split = load_tokenized(cfg["source"], cfg["block_size"], cfg["truncation"], cfg["split_seed"],
                           cfg["val_fraction"], cfg["head_fraction"])["validation"].subset(cfg.get("val_limit"))
    model, criterion = model_from_checkpoint(ckpt, run.model, cfg.get("attention", "auto"))
    device = resolve_device("cpu")
    probs = positive_probabilities(model, criterion, split, device,
                                   resolve_precision(cfg.get("precision", "auto"), device),
                                   cfg["eval_batch_size"], cfg["pad_multiple"])
    return run.write_val_predictions(split.labels, probs)


def study_checkpoints(results_dir: str | Path = "results",
                      profile: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """For each loss, (label, checkpoint path) of its finished runs, best validation accuracy first."""
    runs = read_results(runs_csv(results_dir), finished_only=True)
    out: dict[str, list[tuple[str, str]]] = {}
    if runs.empty:
        return out
    if profile is not None:
        runs = runs[runs["profile"] == profile]
    for loss, group in runs.sort_values("val_accuracy", ascending=False).groupby("loss", sort=False):
        options = [(f"seed {r['seed']}: {100 * r['val_accuracy']:.2f}% val", str(RunDir(results_dir, str(r["run_id"])).model))
                   for _, r in group.iterrows() if RunDir(results_dir, str(r["run_id"])).model.is_file()]
        if options:
            out[str(loss)] = options
    return out
