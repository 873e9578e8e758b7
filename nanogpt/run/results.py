"""`runs.csv`: one row per run, an index over the run folders (which are the source of truth).

Rows are added under an exclusive lock and written atomically, so concurrent studies cannot lose each other's
rows and a crash never tears the file. A missing, corrupt or torn index (unreadable bytes, a truncated row, a
config cell that is not JSON) is rebuilt from the run folders' meta.json by `sync_index`, which says so;
rows of runs whose folders are not here (committed results, without their checkpoints) are kept.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from nanogpt.core.artifacts import atomic_write_csv, locked
from nanogpt.run.rundir import TEMP_SUFFIX, RunDir, run_dirs

STATUSES = ("ok", "failed")
REQUIRED_COLUMNS = ("run_id",)


class ResultsIndexError(ValueError):
    """runs.csv cannot be read as a results index; the message names the file and what is wrong."""


def runs_csv(out_dir: str | Path) -> Path:
    return Path(out_dir) / "runs.csv"


def init_label(cfg) -> str:
    """How a run's backbone started: 'scratch', 'gpt2', or 'lm:<backbone id>' (the pre-trained backbone's folder)."""
    from nanogpt.run.backbone import backbone_path, load_backbone

    path = backbone_path(cfg.init)
    return cfg.init if path is None else "lm:" + load_backbone(path)["backbone_id"]


def result_row(cfg, run_id: str, n_train: int, n_val: int, device: str, precision: str, status: str,
               **numbers) -> dict:
    """One row of runs.csv for a run of `cfg` (a TrainConfig): what produced it, and its numbers (NaN until
    given). A failed run has status 'failed', an error and no accuracy, so it can never enter a comparison."""
    import torch

    from nanogpt.core.runtime import processor_of
    from nanogpt.data.imdb import source_fingerprint

    row = {"run_id": run_id, "status": status, "loss": cfg.loss, "arm": cfg.arm(), "seed": cfg.seed,
           "profile": cfg.profile,
           "source": cfg.source, "split_seed": cfg.split_seed, "n_train": n_train, "n_val": n_val,
           "val_accuracy": float("nan"), "val_loss": float("nan"), "roc_auc": float("nan"), "ece": float("nan"),
           "f1": float("nan"), "steps": cfg.max_steps, "train_seconds": float("nan"),
           "tokens_per_second": float("nan"), "device": device, "precision": precision,
           "torch_version": torch.__version__, "config": json.dumps(asdict(cfg), sort_keys=True), "error": "",
           "data": source_fingerprint(cfg.source), "keep": cfg.keep, "model_sha256": "", "init": init_label(cfg),
           "backbone_sha256": cfg.backbone_sha256() if cfg.init.startswith("lm:") else "", **processor_of(device)}
    row.update(numbers)
    return row


def _clean_index_temps(csv_path: Path) -> None:
    """Temporary files of index writes killed mid-way; only called while holding the index lock, when no
    write of ours can be in flight."""
    for tmp in csv_path.parent.glob(f".{csv_path.name}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def _write_rows(csv_path: Path, rows: pd.DataFrame) -> Path:
    _clean_index_temps(csv_path)
    return atomic_write_csv(csv_path, rows)


class ForeignRowError(ResultsIndexError):
    """A finished row of this run id, trained on another processor (or on one no row recorded), is in the index:
    a run from here would give other numbers under the same id, so it never replaces that row silently."""


PROCESSOR_FIELDS = ("processor", "isa")


def processor_key(row) -> tuple[str, str]:
    """(processor, isa) of a row; ('', '') for rows from before the processor was recorded."""
    return tuple("" if pd.isna(v := row.get(f, "")) else str(v) for f in PROCESSOR_FIELDS)


def describe_processor(key: tuple[str, str]) -> str:
    return f"{key[0]} [{key[1]}]" if any(key) else "an unrecorded processor (rows from before 2026-12)"


def foreign_finished_row(old: pd.DataFrame, row: dict, key: str = "run_id") -> dict | None:
    """The finished row of `old` with `row`'s key that came from another processor than `row`, if any."""
    if old.empty or key not in old.columns:
        return None
    same = old[old[key].astype(str) == str(row[key])]
    if "status" in same.columns:
        same = same[_finished_status(same["status"])]
    for _, prior in same.iterrows():
        if processor_key(prior) != processor_key(row):
            return prior.to_dict()
    return None


def _foreign_error(csv_path: Path, prior: dict, row: dict, key: str = "run_id") -> ForeignRowError:
    return ForeignRowError(
        f"{csv_path}: run {row[key]} is already finished there, trained on {describe_processor(processor_key(prior))};"
        f" here it runs on {describe_processor(processor_key(row))}, where its numbers differ (runs are "
        "bit-identical on one processor only), so that row is never replaced. To train it here, use another "
        "results folder (--out).")


def refuse_foreign(csv_path: str | Path, run_id: str, device_type: str) -> None:
    """Before training `run_id` into this index: a ForeignRowError if it holds the run finished on another
    processor (the row this run would end by replacing), so no training time is spent on a row that cannot land."""
    from nanogpt.core.runtime import processor_of

    csv_path = Path(csv_path)
    try:
        old = read_results(csv_path)
    except ResultsIndexError:
        return  # the write at the end rebuilds it and checks again
    row = {"run_id": run_id, **processor_of(device_type)}
    prior = foreign_finished_row(old, row)
    if prior is not None:
        raise _foreign_error(csv_path, prior, row)


def upsert_result_row(csv_path: str | Path, row: dict, key: str = "run_id") -> Path:
    """Add a row to a results CSV, replacing any earlier row with the same key, under a lock. An unreadable
    index is rebuilt from the run folders first (see sync_index). A finished row from another processor is never
    replaced: that is a ForeignRowError naming both processors (train such a run into another results folder)."""
    csv_path = Path(csv_path)
    with locked(csv_path):
        try:
            old = read_results(csv_path)
        except ResultsIndexError:
            old = _rebuilt(csv_path)
        prior = foreign_finished_row(old, row, key) if PROCESSOR_FIELDS[0] in row else None
        if prior is not None:
            raise _foreign_error(csv_path, prior, row, key)
        new = pd.DataFrame([row])
        if len(old):
            old = old[old[key].astype(str) != str(row[key])]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        return _write_rows(csv_path, new)


def read_results(csv_path: str | Path, finished_only: bool = False) -> pd.DataFrame:
    """The results table (empty when there is none); with finished_only, only runs that ended with a score.
    Raises ResultsIndexError, naming the file, when it is not a readable index."""
    csv_path = Path(csv_path)
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        runs = pd.read_csv(csv_path, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise ResultsIndexError(f"{csv_path} is not a readable results index ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]})") from exc
    _validate(runs, csv_path)
    return finished(runs) if finished_only else runs


def _validate(runs: pd.DataFrame, csv_path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise ResultsIndexError(f"{csv_path} lacks column(s) {missing}: it is torn or not a results index.")
    bad = [i for i, rid in enumerate(runs["run_id"]) if not isinstance(rid, str)]
    for i, config in enumerate(runs["config"] if "config" in runs.columns else []):
        try:
            ok = isinstance(json.loads(config), dict)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad.append(i)
    if "status" in runs.columns:
        bad += [i for i, s in enumerate(runs["status"]) if not (pd.isna(s) or s in STATUSES)]
    if bad:
        raise ResultsIndexError(f"{csv_path}: row(s) {sorted(set(bad))[:10]} are torn (no run id, a config that is "
                                "not JSON, or an unknown status).")


def _finished_status(status: pd.Series) -> pd.Series:
    """True where a row's status is 'ok' or empty (a row from before statuses); as objects, since an all-empty
    status column reads as floats, which pandas will not fill with a string."""
    return status.astype(object).fillna("ok").eq("ok")


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs that finished with a score; failed runs never count as an accuracy."""
    if runs.empty:
        return runs
    ok = _finished_status(runs["status"]) if "status" in runs.columns else pd.Series(True, index=runs.index)
    return runs[ok & runs["val_accuracy"].notna()].reset_index(drop=True)


def fixed_design(runs: pd.DataFrame, split_seed: int = 1337) -> pd.DataFrame:
    """Rows of the fixed design: the standard arms (plain CE and BCE, not the paired ones) on the fixed split."""
    if runs.empty:
        return runs
    keep = runs["split_seed"] == split_seed if "split_seed" in runs.columns else pd.Series(True, index=runs.index)
    if "arm" in runs.columns:
        keep &= runs["arm"].fillna(runs["loss"]) == runs["loss"]
    return runs[keep].reset_index(drop=True)


def one_population(runs: pd.DataFrame, prefer: tuple[str, str] | None = None,
                   min_per_loss: int = 2, choose: tuple[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """The rows of one (device, precision) population, and a note naming any others left out: bf16 and fp32
    runs, or CPU and GPU runs, are never pooled silently. `choose` (e.g. ("cpu", "bf16")) takes that population
    whatever its size, and is a ValueError naming the populations there are when it has no runs. Else `prefer`
    (what this machine trains, e.g. ("cpu", "fp32")) is taken when it has at least `min_per_loss` runs of each
    loss (what a comparison needs; a population still being trained may not); otherwise the largest population
    that has them, else the largest."""
    keys = [c for c in ("device", "precision") if c in runs.columns]
    labels = _population_labels(runs, keys)
    counts = Counter(labels)
    if choose is not None:
        present = counts if len(keys) == 2 else Counter()
        if tuple(choose) not in present:
            there = ", ".join(f"{'/'.join(k)} ({n} runs)" for k, n in sorted(present.items())) or "none"
            raise ValueError(f"No runs on {'/'.join(choose)} here; the populations there are: {there}.")
    if runs.empty or not keys:
        return runs, ""
    if len(counts) == 1:
        return runs, ""
    order = sorted(counts, key=lambda k: (-counts[k], k))  # the largest first; ties by name

    def comparable(key) -> bool:
        if "loss" not in runs.columns:
            return True
        losses = Counter(loss for label, loss in zip(labels, runs["loss"]) if label == key)
        return all(losses[loss] >= min_per_loss for loss in ("ce", "bce"))

    preferred = tuple(prefer) if prefer is not None and len(keys) == 2 else None
    if preferred in counts and comparable(preferred):
        order = [preferred] + [k for k in order if k != preferred]
    chosen = tuple(choose) if choose is not None else next((k for k in order if comparable(k)), order[0])
    mask = [label == chosen for label in labels]
    others = ", ".join(f"{counts[k]} run(s) on {'/'.join(k)}" for k in order if k != chosen)
    note = (f"Analysed: the {sum(mask)} runs on {'/'.join(chosen)}; left out, as a separate "
            f"population: {others}.")
    if choose is None and preferred in counts and preferred != chosen:
        note += (f" This machine's own population ({'/'.join(preferred)}) has fewer than {min_per_loss} runs of "
                 "each loss yet.")
    return runs[mask].reset_index(drop=True), note


def _population_labels(runs: pd.DataFrame, keys: list[str]) -> list[tuple[str, ...]]:
    """Each row's (device, precision) as strings; a value not recorded is 'unrecorded', a population of its own."""
    return [tuple("unrecorded" if pd.isna(v) else str(v) for v in values)
            for values in runs[keys].itertuples(index=False, name=None)]


def population_of(runs: pd.DataFrame) -> str:
    """'device/precision' of rows that come from one population (e.g. 'cpu/fp32'), for the reports written from
    them; a ValueError when they mix populations or there are none, since a report must say what produced it."""
    pairs = sorted({f"{d}/{p}" for d, p in zip(runs.get("device", []), runs.get("precision", []))})
    if len(pairs) != 1:
        raise ValueError(f"expected the runs of one device/precision population, got {pairs or 'no runs'}; "
                         "choose one with results.one_population")
    return pairs[0]


def population_tag(profile: str, population: str | None) -> str:
    """The name a population's reports and figures go under: the profile for its cpu/fp32 runs, else the profile
    with what differs ('cpu-bf16', 'paper-cuda-bf16'), so that a study of one population never overwrites
    another's `figures/<tag>/`, `comparison-<tag>.json` or `powered-<tag>.json`."""
    if not population:
        return profile
    device, _, precision = population.partition("/")
    return "-".join([profile] + [device] * (device != "cpu") + [precision] * (precision not in ("fp32", "")))


def folder_rows(out_dir: str | Path) -> pd.DataFrame:
    """The rows recorded in the run folders' meta.json (finished and failed runs)."""
    rows = []
    for run in run_dirs(out_dir):
        meta = run.read_meta()
        if meta and isinstance(meta.get("row"), dict) and meta["row"].get("run_id") == run.run_id:
            rows.append(meta["row"])
    return pd.DataFrame(rows)


def _rebuilt(csv_path: Path) -> pd.DataFrame:
    return folder_rows(csv_path.parent)


def sync_index(out_dir: str | Path, verbose: bool = True) -> pd.DataFrame:
    """Make runs.csv agree with the run folders, and return it.

    A missing index is created, an unreadable or torn one is rebuilt from the folders (its readable rows of
    runs without a folder are lost, and the message says so), and runs whose folder holds a row the index
    lacks (a process killed between the two writes) are added."""
    csv_path = runs_csv(out_dir)
    with locked(csv_path):
        try:
            index = read_results(csv_path)
        except ResultsIndexError as exc:
            rebuilt = _rebuilt(csv_path)
            if verbose:
                print(f"{exc}; rebuilt it from {len(rebuilt)} run folder(s) in {Path(out_dir) / 'runs'}. Rows of "
                      "runs without a folder there could not be recovered.")
            _write_rows(csv_path, rebuilt)
            return rebuilt
        from_folders = folder_rows(out_dir)
        if from_folders.empty:
            return index
        known = set(index["run_id"].astype(str)) if len(index) else set()
        extra = from_folders[~from_folders["run_id"].astype(str).isin(known)]
        if extra.empty:
            return index
        if verbose:
            print(f"{csv_path}: added {len(extra)} run(s) found in their folders but missing from the index")
        merged = pd.concat([index, extra], ignore_index=True) if len(index) else extra.reset_index(drop=True)
        _write_rows(csv_path, merged)
        return merged


# ------------------------------------------------------------------------------------------- readers


def load_histories(results_dir: str | Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Learning curves of the given runs, long format, with run_id, loss, arm (the loss where the row has
    none) and seed columns."""
    frames = []
    for _, r in runs.iterrows():
        path = RunDir(results_dir, str(r["run_id"])).history
        if path.is_file():
            arm = r["arm"] if "arm" in r and isinstance(r["arm"], str) and r["arm"] else r["loss"]
            frames.append(pd.read_csv(path).assign(run_id=r["run_id"], loss=r["loss"], arm=arm, seed=r["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def study_checkpoints(results_dir: str | Path = "results",
                      profile: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """For each loss, (label, checkpoint path) of its finished runs that kept weights, best accuracy first."""
    runs = read_results(runs_csv(results_dir), finished_only=True)
    out: dict[str, list[tuple[str, str]]] = {}
    if runs.empty:
        return out
    if profile is not None:
        runs = runs[runs["profile"] == profile]
    for loss, group in runs.sort_values("val_accuracy", ascending=False).groupby("loss", sort=False):
        models = [(r, RunDir(results_dir, str(r["run_id"])).model) for _, r in group.iterrows()]
        options = [(f"seed {r['seed']}: {100 * r['val_accuracy']:.2f}% val", str(path))
                   for r, path in models if path.is_file()]
        if options:
            out[str(loss)] = options
    return out
