"""The validation predictions of finished runs: each run folder's `val_predictions.csv`, and per profile the
committed archive `results/val-predictions-<profile>.npz` that stands in for the folders on a fresh clone (for
`--keep none` runs it is their only lasting copy, so it only ever gains or updates entries)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nanogpt.core.artifacts import locked
from nanogpt.run.results import ResultsIndexError
from nanogpt.run.rundir import RunDir


def predictions_archive(results_dir: str | Path, profile: str) -> Path:
    """`results/val-predictions-<profile>.npz`: the validation predictions of a profile's runs, committed in
    place of the run folders (which git ignores), so that notebook 04 runs on a fresh clone."""
    return Path(results_dir) / f"val-predictions-{profile}.npz"


def _archive_arrays(predictions: dict[str, pd.DataFrame]) -> dict:
    import numpy as np

    arrays = {}
    for run_id, df in predictions.items():
        arrays[f"p__{run_id}"] = df["positive_probability"].to_numpy(np.float16)
        arrays[f"y__{run_id}"] = df["label"].to_numpy(np.int8)
    return arrays


def archived_run_ids(path: str | Path) -> set[str]:
    """The run ids an archive holds (empty when there is none)."""
    import numpy as np

    if not Path(path).is_file():
        return set()
    with np.load(path, allow_pickle=False) as z:
        return {name[3:] for name in z.files if name.startswith("p__")}


def archive_val_predictions(results_dir: str | Path, profile: str, predictions: dict[str, pd.DataFrame]) -> Path:
    """Add or update these runs' entries in the archive, keeping every other run's: per run, P(positive) in
    float16 (1e-3 precise, enough for calibration plots and churn) and the labels as int8. Under a lock and
    atomic, so concurrent studies and a crash never lose an entry. For `--keep none` runs the archive is the
    only copy of their predictions: nothing here ever drops one."""
    import io

    import numpy as np

    from nanogpt.core.artifacts import atomic_write_bytes

    path = predictions_archive(results_dir, profile)
    with locked(path):
        arrays = {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
            except (OSError, ValueError) as exc:
                raise ResultsIndexError(f"{path} is not a readable predictions archive ({exc}); it is left as it "
                                        "is. Restore it from git (git checkout -- <file>) and run again.") from exc
        new = _archive_arrays(predictions)
        if all(name in arrays and np.array_equal(arrays[name], a) for name, a in new.items()):
            return path  # nothing new: the file (committed, perhaps) keeps its bytes
        arrays.update(new)
        buf = io.BytesIO()
        np.savez_compressed(buf, **dict(sorted(arrays.items())))
        return atomic_write_bytes(path, buf.getvalue())


def archive_finished_run(results_dir: str | Path, row: dict) -> Path | None:
    """Put one finished run's validation predictions (from its folder) into its profile's archive, as soon as
    it finishes, so that `--keep none` runs never depend on their folder surviving. None when the folder has
    none (a failed run)."""
    run = RunDir(results_dir, str(row["run_id"]))
    if row.get("status", "ok") != "ok" or not run.val_predictions.is_file():
        return None
    return archive_val_predictions(results_dir, str(row["profile"]), {run.run_id: pd.read_csv(run.val_predictions)})


def _from_archive(results_dir: str | Path, run_id: str) -> pd.DataFrame | None:
    import numpy as np

    for path in sorted(Path(results_dir).glob("val-predictions-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                if f"p__{run_id}" in z.files:
                    p, y = z[f"p__{run_id}"].astype(np.float64), z[f"y__{run_id}"].astype(np.int64)
                    return pd.DataFrame({"row": np.arange(len(y)), "label": y, "positive_probability": p})
        except (OSError, ValueError):
            continue
    return None


def load_val_predictions(results_dir: str | Path, run_id: str) -> pd.DataFrame:
    """P(positive) of every validation review for one run: from its folder's `val_predictions.csv`, else from
    a committed archive (`val-predictions-<profile>.npz`), else computed once from its checkpoint (inference
    only) and saved in its folder. FileNotFoundError when none of the three is here."""
    run = RunDir(results_dir, str(run_id))
    if run.val_predictions.is_file():
        return pd.read_csv(run.val_predictions)
    archived = _from_archive(results_dir, str(run_id))
    if archived is not None:
        return archived
    if not run.model.is_file():
        raise FileNotFoundError(f"run {run_id}: no validation predictions in {run.path} or in an archive "
                                f"{predictions_archive(results_dir, '<profile>').name}, and no checkpoint to "
                                "compute them from.")
    from types import SimpleNamespace

    from nanogpt.core.runtime import resolve_device, resolve_precision
    from nanogpt.data.imdb import load_splits
    from nanogpt.run.checkpoints import load_checkpoint, model_from_checkpoint
    from nanogpt.run.evaluate import positive_probabilities

    ckpt = load_checkpoint(run.model)
    cfg = ckpt["train_config"]
    split = load_splits(SimpleNamespace(**{"reading": "truncated", "train_limit": None, **cfg}))[1]
    model, criterion = model_from_checkpoint(ckpt, run.model, cfg.get("attention", "auto"))
    device = resolve_device("cpu")
    probs = positive_probabilities(model, criterion, split, device,
                                   resolve_precision(cfg.get("precision", "auto"), device),
                                   cfg["eval_batch_size"], cfg["pad_multiple"], cfg.get("reading", "truncated"),
                                   cfg.get("window_stride"))
    return run.write_val_predictions(split.labels, probs)


def available_val_predictions(results_dir: str | Path, runs: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], list]:
    """The validation predictions of those `runs` that have them, and the ids of those that do not."""
    found, missing = {}, []
    for rid in runs["run_id"].astype(str):
        try:
            found[rid] = load_val_predictions(results_dir, rid)
        except FileNotFoundError:
            missing.append(rid)
    return found, missing
