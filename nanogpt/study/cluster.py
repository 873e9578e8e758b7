"""The runs of a study as Dask tasks: local worker processes, one (or several) per GPU, or a cluster the user
already runs (`dask scheduler` / `dask worker`, dask-jobqueue on Slurm, dask-kubernetes).

Each run is one task. A worker trains into the results folder (which must be storage every worker and the
client share: run folders are written with atomic renames) and returns the run's row; the client alone
writes runs.csv, so the index has one writer and the format of a local study. A worker killed mid-run is
restarted by its nanny and Dask runs the task again: the run resumes from its last saved state and ends as
it would have (bit-identical on CPU). A run that fails for its own reasons (a NaN loss) comes back as a
failed row, as in a local study; any other error is reported after the other runs have finished.
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from dataclasses import asdict

from nanogpt.run.config import TrainConfig
from nanogpt.run.predictions import archive_finished_run
from nanogpt.run.progress import progress
from nanogpt.run.results import runs_csv, upsert_result_row

CONNECT_TIMEOUT_S = 15  # an address that does not answer: one clear line after this, never a hang


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker so that `workers` single-task workers do not oversubscribe the cores."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


def gpu_worker_env(workers: int, gpus: int) -> list[dict]:
    """One environment per worker, pinning worker i to GPU i mod `gpus` (several workers may share a GPU: the
    small models leave a large GPU mostly idle)."""
    return [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(workers)]


def worker_environ(threads: int) -> dict:
    """The environment a local cluster's nannies give their workers. Dask's default sets OMP/MKL/OpenBLAS to
    one thread and MALLOC_TRIM_THRESHOLD_=65536, which returns freed memory to the OS so eagerly that torch's
    per-step buffers are mapped afresh every step: 4 `smoke` runs on one worker took 28.4 s with this
    environment and 49.2 s with only that malloc setting added. Ours: `threads` threads each, and glibc's own
    malloc policy."""
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}


def _local_cluster(workers: int, gpus: int):
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if gpus == 0:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            silence_logs=logging.ERROR)
    specs = {f"gpu{env['CUDA_VISIBLE_DEVICES']}-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": env}}
             for i, env in enumerate(gpu_worker_env(workers, gpus))}
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                       silence_logs=logging.ERROR)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, gpus: int | None = None,
                quiet: bool = False):
    """A Dask client: on `scheduler` if given, else on a local cluster of `workers` processes (pinned to the
    visible GPUs when there are any). Closed, with its local cluster, on exit."""
    import dask
    from distributed import Client

    with ExitStack() as stack:
        if scheduler:
            try:
                client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"no Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S} s "
                                      f"({type(exc).__name__}). Start one with `dask scheduler` and workers with "
                                      f"`dask worker {scheduler}`, or drop --scheduler to train here.") from None
            stack.callback(client.close)
            yield client
            return
        if not workers or workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}.")
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        # for the cluster's lifetime: a nanny reads it again when it restarts a killed worker
        stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ(
            1 if gpus else worker_threads(workers))}))
        cluster = stack.enter_context(_local_cluster(workers, gpus))
        client = stack.enter_context(Client(cluster))
        if not quiet:
            where = f"{gpus} GPU(s)" if gpus else f"{worker_threads(workers)} torch thread(s) each"
            print(f"local Dask cluster: {workers} worker(s), {where}; dashboard {client.dashboard_link}")
        yield client


def train_task(fields: dict) -> dict:
    """On a worker: train one run (resuming its saved state if a dead worker left one) and return its row.
    The row is written to the run folder only; the client upserts runs.csv."""
    from nanogpt.run.rundir import RunDir
    from nanogpt.run.train import train_unless_finished

    cfg = TrainConfig(**fields)
    run = RunDir(cfg.out_dir, cfg.run_id())
    with run.claim(wait=True):  # another process training it: wait for it, then see what it left
        return train_unless_finished(cfg, run, write_index=False)[1]


def run_on_cluster(client, configs: list[TrainConfig], out_dir, quiet: bool = False,
                   threads: int | None = None) -> list[str]:
    """Submit one task per config, upsert each row into `out_dir`'s runs.csv as it arrives, show one progress
    bar (runs done, running mean accuracy per arm); return the ids of runs that failed. Ctrl-C cancels what
    has not finished; finished rows are kept."""
    from distributed import as_completed

    if threads is not None:
        configs = [c.replace(num_threads=threads) for c in configs]  # run-local: the run id stays the same
    futures = {client.submit(train_task, asdict(cfg), key=f"train-{cfg.run_id()}", pure=False): cfg
               for cfg in configs}
    accuracy: dict[str, list[float]] = {}
    failed, errors = [], []
    bar = progress(total=len(futures), desc="study", unit="run", disable=quiet)
    try:
        for future in as_completed(futures):
            cfg = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - recorded as failed; the other runs go on
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
                upsert_result_row(runs_csv(out_dir), _failed_row(cfg, message))
                errors.append(f"{cfg.run_id()}: {message}")
                failed.append(cfg.run_id())
                bar.update(1)
                continue
            upsert_result_row(runs_csv(out_dir), row)
            archive_finished_run(out_dir, row)
            if row.get("status") == "ok":
                accuracy.setdefault(cfg.arm(), []).append(float(row["val_accuracy"]))
            else:
                failed.append(cfg.run_id())
            bar.set_postfix({arm: f"{100 * sum(v) / len(v):.2f}%" for arm, v in sorted(accuracy.items())},
                            refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()
    if errors and not quiet:
        print(f"{len(errors)} run(s) raised on the workers and are recorded as failed: " + "; ".join(errors[:5]))
    return failed


def _failed_row(cfg: TrainConfig, message: str) -> dict:
    """The runs.csv row of a run whose task raised: status 'failed', the error, no numbers."""
    from nanogpt.run.results import result_row

    ident = cfg.identity()
    return result_row(cfg, cfg.run_id(), 0, 0, ident["device"], ident["precision"], "failed", steps=0,
                      error=message)
