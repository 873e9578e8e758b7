"""Many runs: both losses x the profile's seeds; finished runs (their folder says so, weights verified) are
reused, interrupted ones resumed; and the study notebooks, executed by papermill."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from nanogpt.core.losses import LOSS_NAMES
from nanogpt.data.imdb import RESPLIT_OFFSET
from nanogpt.run.config import TrainConfig
from nanogpt.run.profiles import get_profile
from nanogpt.run.results import read_results, runs_csv, sync_index
from nanogpt.run.rundir import RunDir, finished_run_ids
from nanogpt.run.train import train_unless_finished


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' -> [0, 2, 7]; '3' -> [3]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError(f"range {part!r} runs backwards; write it as {hi}-{lo}")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError as exc:
            detail = str(exc) if "backwards" in str(exc) else f"{part!r} is not a seed"
            raise ValueError(f"Bad --seeds {text!r}: {detail}. Use a range like 0-4 or a list like 0,1,2.") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"Bad --seeds {text!r}: seeds must be >= 0.")
    return list(dict.fromkeys(seeds))


# A study's design says what varies between its runs (issue: sources of variance, paired runs).
#   fixed    the training seed varies (init, dropout, batch order); the validation split is fixed (split seed 1337)
#   resplit  the split varies with the training seed (split seed RESPLIT_OFFSET + seed): what a study that
#            re-splits for every run sees
#   paired   per seed: BCE; CE with its head built from that BCE head (same function, backbone, batches and
#            dropout masks at step 0); and BCE with CE's effective head step (head lr x2, head decay x0.5)
DESIGNS = ("fixed", "resplit", "paired")
PAIRED_ARMS = {"ce": dict(loss="ce", head_init="paired"), "bce": dict(loss="bce"),
               "bce-head2x": dict(loss="bce", head_lr_scale=2.0, head_weight_decay_scale=0.5)}


def design_configs(profile: str, design: str = "fixed", seeds: list[int] | None = None, losses=LOSS_NAMES,
                   out_dir: str | Path = "results", quiet: bool = False, **overrides) -> list[TrainConfig]:
    """The runs of a study: one config per (arm, seed) of `design` (see DESIGNS), seed by seed (every arm of a
    seed before the next seed), so that a study stopped at any point has as many runs of each arm, give or take
    one. In the paired design `losses` may also name the arm 'bce-head2x'; by default it runs all three arms."""
    if design not in DESIGNS:
        raise ValueError(f"Unknown design {design!r}; use one of {DESIGNS}.")
    prof = get_profile(profile)
    seeds = list(prof.seeds) if seeds is None else seeds
    common = dict(out_dir=str(out_dir), quiet=quiet, **overrides)
    if design == "paired":
        arms = tuple(PAIRED_ARMS) if tuple(losses) == LOSS_NAMES else tuple(losses)
        unknown = [a for a in arms if a not in PAIRED_ARMS]
        if unknown:
            raise ValueError(f"Unknown arm(s) {unknown} of the paired design; use {tuple(PAIRED_ARMS)}.")
        return [prof.make_config(seed=seed, **{**common, **PAIRED_ARMS[arm]}) for seed in seeds for arm in arms]
    split = (lambda seed: {"split_seed": RESPLIT_OFFSET + seed}) if design == "resplit" else (lambda seed: {})
    return [prof.make_config(loss, seed, **{**common, **split(seed)}) for seed in seeds for loss in losses]


def run_study(profile: str, seeds: list[int] | None = None, losses=LOSS_NAMES, out_dir: str | Path = "results",
              quiet: bool = False, design: str = "fixed", workers: int | None = None, scheduler: str | None = None,
              **overrides) -> pd.DataFrame:
    """Train every run of the study not yet finished (here, or as Dask tasks with `workers` or `scheduler`);
    return the rows of this study's runs."""
    configs = design_configs(profile, design, seeds, losses, out_dir, quiet, **overrides)
    if not quiet:
        arms = sorted({c.arm() for c in configs})
        print(f"study '{profile}', design '{design}': {len(configs)} runs ({', '.join(arms)} x "
              f"{len(configs) // len(arms)} seeds)")
    return run_configs(configs, out_dir, quiet, workers, scheduler)


def run_configs(configs: list[TrainConfig], out_dir: str | Path, quiet: bool = False, workers: int | None = None,
                scheduler: str | None = None) -> pd.DataFrame:
    """Train the runs of `configs` that have not finished; return the index rows of all of them.

    The index is first brought in line with the run folders (rebuilt if torn, see `sync_index`). Finished runs
    (verified weights) are skipped, interrupted ones resume from their last state, a run that fails (NaN loss)
    is recorded as failed and the others go on. Several studies may share a results folder: a run another live
    process is training is skipped and looked at again at the end, once that process lets go of it.
    With `workers` (a local Dask cluster) or `scheduler` (an existing one) the runs are Dask tasks instead
    (`nanogpt.study.cluster`); without either they train here, one after another."""
    index = sync_index(out_dir, verbose=not quiet)
    done = finished_run_ids(out_dir)
    ids = [c.run_id() for c in configs]  # each id hashes the config and resolves data, device and precision
    _clean_finished(out_dir, [c for c, rid in zip(configs, ids) if rid in done])
    rows_only = finished_without_folder(out_dir, index, [rid for c, rid in zip(configs, ids) if c.keep == "none"])
    elsewhere = finished_elsewhere(out_dir, index, [(c, rid) for c, rid in zip(configs, ids) if rid not in done])
    rows_only |= set(elsewhere)
    todo = [c for c, rid in zip(configs, ids) if rid not in done and rid not in rows_only]
    if not quiet:
        print(f"{len(configs) - len(todo)} already finished, {len(todo)} to train"
              + (f" ({len(rows_only)} of the finished known from runs.csv alone: no run folder here"
                 + (", and this study keeps no weights)" if len(rows_only) > len(elsewhere) else ")")
                 if rows_only else ""))
        if elsewhere:
            print(describe_elsewhere(elsewhere))
        if todo and not (workers or scheduler):  # it times this machine: not what Dask workers will take
            from nanogpt.study.estimate import describe_estimate

            print(describe_estimate(todo))
    if todo and (workers or scheduler):
        from nanogpt.study.cluster import dask_client, run_on_cluster, worker_threads

        with dask_client(workers, scheduler, quiet=quiet) as client:
            failed_ids = run_on_cluster(client, todo, out_dir, quiet,
                                        threads=worker_threads(workers) if workers and not scheduler else None)
        if failed_ids and not quiet:
            print(f"{len(failed_ids)} run(s) failed and are recorded with status 'failed': " + ", ".join(failed_ids))
        todo = []
    deferred, failed = [], []
    for i, cfg in enumerate(todo, 1):
        if not quiet:
            print(f"[{i}/{len(todo)}] {cfg.arm()} seed {cfg.seed}")
        outcome = _train_one(cfg, quiet)
        (deferred if outcome == "claimed" else failed if outcome == "failed" else []).append(cfg)
    for cfg in deferred:  # wait for the other process; train what it left unfinished
        if _train_one(cfg, quiet, wait=True) == "failed":
            failed.append(cfg)
    if failed and not quiet:
        print(f"{len(failed)} run(s) failed and are recorded with status 'failed': "
              + ", ".join(c.run_id() for c in failed))
    return finished_rows(out_dir, ids)


def finished_rows(out_dir: str | Path, ids) -> pd.DataFrame:
    """The finished rows of runs.csv whose run id is one of `ids`."""
    runs = read_results(runs_csv(out_dir), finished_only=True)
    return runs[runs["run_id"].astype(str).isin(set(ids))].reset_index(drop=True)


def study_rows(profile: str, design: str = "fixed", seeds: list[int] | None = None, losses=LOSS_NAMES,
               out_dir: str | Path = "results", **overrides) -> pd.DataFrame:
    """The finished rows of exactly the runs this study asks for (by run id: profile, design, seeds, and the
    device and precision they resolve to here), so that a summary never pools another population's rows of
    the same profile and seeds (bf16 runs made elsewhere, say)."""
    configs = design_configs(profile, design, seeds, losses, out_dir, quiet=True, **overrides)
    return finished_rows(out_dir, [c.run_id() for c in configs])


def _train_one(cfg: TrainConfig, quiet: bool, wait: bool = False) -> str:
    """Train one run unless another process holds it ('claimed') or has finished it meanwhile; 'ok' or
    'failed' (recorded as such) otherwise. An interrupted run continues from its last state."""
    run = RunDir(cfg.out_dir, cfg.run_id())
    with run.claim(wait=wait) as mine:
        if not mine:
            if not quiet:
                print(f"skipped for now: run {run.run_id} is being trained by another process (pid "
                      f"{run.claimed_by()})")
            return "claimed"
        status, row = train_unless_finished(cfg, run)
    if status == "failed" and not quiet:
        print(f"failed: {row['error']}")
    return status


def finished_without_folder(out_dir: str | Path, index: pd.DataFrame, ids: list[str]) -> set[str]:
    """Which of `ids` (runs asked for with `--keep none`: only their row is wanted) have their finished row in
    runs.csv but no folder here (a clone of committed results): the row is all such a study would keep, so the
    run counts as finished rather than being trained again. A study that asks for weights trains it again;
    where a folder exists, the folder decides."""
    if index.empty:
        return set()
    rows = index[(index["status"] == "ok") & index["run_id"].astype(str).isin(ids)]
    return {rid for rid in rows["run_id"].astype(str) if not RunDir(out_dir, rid).path.exists()}


def finished_elsewhere(out_dir: str | Path, index: pd.DataFrame, pending: list) -> dict[str, tuple[str, str]]:
    """Of `pending` (config, run id) pairs not finished in a folder here: those whose finished row in runs.csv
    was trained on another processor (or on one no row recorded), as {run id: (processor, isa) of that row}. They
    count as finished, whatever the study keeps: training them here would give other numbers under the same id
    (runs are bit-identical on one processor only) and replace a committed row, so they are never trained
    again silently. A study that wants them from this processor trains into another results folder."""
    from nanogpt.core.runtime import processor_of
    from nanogpt.run.results import foreign_finished_row, processor_key

    if index.empty or not pending:
        return {}
    out = {}
    for cfg, rid in pending:
        prior = foreign_finished_row(index, {"run_id": rid, **processor_of(cfg.population()[0])})
        if prior is not None:
            out[rid] = processor_key(prior)
    return out


def describe_elsewhere(elsewhere: dict[str, tuple[str, str]]) -> str:
    """One paragraph: how many finished runs came from which other processor, and what that means."""
    from collections import Counter

    from nanogpt.core.runtime import processor_of
    from nanogpt.run.results import describe_processor

    here = describe_processor(tuple(processor_of().values()))
    counts = ", ".join(f"{n} on {describe_processor(k)}" for k, n in Counter(elsewhere.values()).most_common())
    return (f"{len(elsewhere)} of the finished runs were trained on another processor than this one ({here}): "
            f"{counts}. They count as finished and their rows are kept as they are; retrained here the same run "
            "ids would give other numbers (runs are bit-identical on one processor only). To train them on this "
            "processor, give the study another results folder (--out).")


def _clean_finished(out_dir: str | Path, configs: list[TrainConfig]) -> None:
    """Resumable states and temporary files that killed processes left in finished runs' folders."""
    for cfg in configs:
        run = RunDir(out_dir, cfg.run_id())
        with run.claim() as mine:
            row = run.finished_row() if mine else None
            if row is not None:
                run.clean_stale(finished=True, keep=row.get("keep") or "final")


NOTEBOOKS = ("01_data_exploration", "02_train_cross_entropy", "03_train_binary_cross_entropy",
             "04_statistical_comparison", "05_classify_reviews")


class NotebookFailed(RuntimeError):
    """A study notebook raised; the message names the notebook and the cell, and where its executed copy is."""


def notebook_parameters(name: str, profile: str, seeds: list[int] | None, source: str, results_dir: Path,
                        figures_dir: Path, overrides: dict, design: str = "fixed", workers: int | None = None,
                        scheduler: str | None = None) -> dict:
    common = {"profile": profile}
    if name.startswith("01"):
        return {**common, "source": source, "figures_dir": str(figures_dir)}
    if name.startswith(("02", "03")):
        return {**common, "seeds": seeds, "source": source, "results_dir": str(results_dir),
                "figures_dir": str(figures_dir), "overrides": overrides, "design": design, "workers": workers,
                "scheduler": scheduler}
    if name.startswith("04"):  # analyses the population the study trained (bf16 and fp32 runs never pool)
        return {**common, "source": source, "results_dir": str(results_dir), "figures_dir": str(figures_dir),
                "population": trained_population(profile, overrides)}
    return {**common, "source": source, "results_dir": str(results_dir)}


def trained_population(profile: str, overrides: dict) -> str:
    """'device/precision' that a study of `profile` with these overrides trains on this machine (the columns
    runs.csv records), e.g. 'cpu/fp32' on an AVX2-only CPU or with --precision fp32."""
    chosen = {k: v for k, v in overrides.items() if k in ("device", "precision")}
    return "/".join(get_profile(profile).make_config(**chosen).population())


def run_notebooks(profile: str, seeds: list[int] | None = None, source: str = "bundled",
                  results_dir: str | Path = "results", figures_dir: str | Path = "figures",
                  reports_dir: str | Path = "reports", notebooks_dir: str | Path | None = None,
                  overrides: dict | None = None, progress: bool = True, design: str = "fixed",
                  workers: int | None = None, scheduler: str | None = None) -> dict[str, Path]:
    """Execute notebooks 01 -> 05 with papermill (02 and 03 train `design`, 04 analyses every design the
    results hold); return where each executed copy went.

    A failing notebook stops the study with a NotebookFailed naming it and the cell; its executed copy,
    with the traceback in the failing cell, is kept in `reports_dir`.
    """
    results_dir, figures_dir = Path(results_dir).resolve(), Path(figures_dir).resolve()
    return {name: execute_notebook(name, notebook_parameters(name, profile, seeds, source, results_dir, figures_dir,
                                                             overrides or {}, design, workers, scheduler),
                                   reports_dir, notebooks_dir, progress)
            for name in NOTEBOOKS}


def execute_notebook(name: str, parameters: dict, reports_dir: str | Path = "reports",
                     notebooks_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Execute one study notebook with papermill into `reports_dir`; a failure is a NotebookFailed naming the
    cell, with the executed copy (traceback included) kept."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from nanogpt.core.resources import REPO_ROOT

    notebooks_dir = Path(notebooks_dir) if notebooks_dir else REPO_ROOT / "notebooks"
    reports_dir = Path(reports_dir).resolve()
    reports_dir.mkdir(parents=True, exist_ok=True)
    output_nb = reports_dir / f"{name}.ipynb"
    if progress:
        print(f"notebook {name} -> {output_nb}")
    try:
        with kernel_imports_this_package():
            pm.execute_notebook(str(notebooks_dir / f"{name}.ipynb"), str(output_nb), parameters=parameters,
                                kernel_name="python3", progress_bar=progress, cwd=str(notebooks_dir))
    except PapermillExecutionError as exc:
        raise NotebookFailed(f"notebook {name} failed in cell {exc.exec_count} ({exc.ename}: "
                             f"{str(exc.evalue).strip()[:300]}); the executed copy is kept at {output_nb}") from None
    return output_nb


@contextlib.contextmanager
def kernel_imports_this_package():
    """While a notebook runs, its kernel (a child process, started in notebooks/) imports the `nanogpt` this process
    runs: its folder first on PYTHONPATH. Without it the kernel imports whatever `nanogpt` is installed, which for a
    second checkout of the repository (a worktree frozen for a long study) is another checkout's code."""
    from nanogpt.core.resources import REPO_ROOT  # the folder that holds this `nanogpt`

    root = str(REPO_ROOT)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([before] if before else []))
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


PRETRAINING_NOTEBOOK = "06_pretraining"


def run_pretraining_notebook(profile: str = "ft", pretrain_profile: str = "lm-cpu", seeds: list[int] | None = None,
                             backbone_seeds: list[int] | None = None, source: str = "bundled",
                             results_dir: str | Path = "results", figures_dir: str | Path = "figures",
                             reports_dir: str | Path = "reports", overrides: dict | None = None,
                             progress: bool = True, **parameters) -> Path:
    """Notebook 06 with train=True: pre-train the backbones, train scratch and pre-trained runs (finished ones
    reused), analyse. `parameters` passes any other of its parameters (variance_loss, pretrain_overrides, ...)."""
    params = {"profile": profile, "pretrain_profile": pretrain_profile, "source": source, "train": True,
              "results_dir": str(Path(results_dir).resolve()), "figures_dir": str(Path(figures_dir).resolve()),
              "overrides": overrides or {}, **parameters}
    if seeds is not None:
        params["seeds"] = seeds
    if backbone_seeds is not None:
        params["backbone_seeds"] = backbone_seeds
    return execute_notebook(PRETRAINING_NOTEBOOK, params, reports_dir, progress=progress)
