"""Studies on a Dask cluster: a real LocalCluster of 2 worker processes, tiny configs."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import figures_tag, tiny_config

from nanogpt.__main__ import main
from nanogpt.run.results import read_results, runs_csv
from nanogpt.run.rundir import RunDir
from nanogpt.study import cluster as C
from nanogpt.study.runs import run_configs

pytestmark = pytest.mark.slow  # worker processes import torch and train


@pytest.fixture(scope="module")
def client():
    """One local cluster of 2 worker processes for the tests that need one (starting one costs seconds)."""
    with C.dask_client(workers=2, quiet=True) as c:
        yield c


def configs(out, **changes):
    # one torch thread everywhere: in-process and worker runs then compute in the same order, bit for bit
    return [tiny_config(out, loss=loss, seed=seed, num_threads=1, **changes) for loss in ("ce", "bce")
            for seed in (0, 1)]


def test_local_cluster_gives_the_in_process_results(tmp_path, client):
    local = run_configs(configs(tmp_path / "a"), tmp_path / "a" / "results", quiet=True)
    assert C.run_on_cluster(client, configs(tmp_path / "b"), tmp_path / "b" / "results", quiet=True) == []
    remote = read_results(runs_csv(tmp_path / "b" / "results"), finished_only=True)
    key = ["run_id", "val_accuracy", "val_loss", "status"]
    assert local[key].sort_values("run_id").values.tolist() == remote[key].sort_values("run_id").values.tolist()
    index = pd.read_csv(runs_csv(tmp_path / "b" / "results"))  # written by the client only, same format
    assert list(index.columns) == list(pd.read_csv(runs_csv(tmp_path / "a" / "results")).columns)
    assert len(index) == 4 and index["run_id"].is_unique


def test_a_worker_killed_mid_run_is_survived(tmp_path, client):
    """kill -9 of the worker process training a run: its nanny restarts it, Dask runs the task again, the run
    resumes from its saved state and ends exactly as an uninterrupted run does."""
    cfg = tiny_config(tmp_path, loss="ce", seed=3, num_threads=1, max_steps=200, eval_interval=200,
                      checkpoint_interval=10, train_limit=2048)
    reference = run_configs([cfg.replace(out_dir=str(tmp_path / "ref"))], tmp_path / "ref", quiet=True)
    out = tmp_path / "results"
    run = RunDir(out, cfg.run_id())
    result = {}
    thread = threading.Thread(target=lambda: result.update(failed=C.run_on_cluster(client, [cfg], out, True)))
    thread.start()
    deadline = time.time() + 120
    while not run.state.is_file():  # a saved state exists: the run is under way
        assert time.time() < deadline and thread.is_alive(), "the run never saved a state"
        time.sleep(0.02)
    busy = [w for w, keys in client.processing().items() if keys]
    pid = client.run(os.getpid, workers=busy)[busy[0]]
    os.kill(pid, signal.SIGKILL)
    thread.join(300)
    assert pid not in client.run(os.getpid).values()  # the worker was really replaced
    assert result["failed"] == []
    rows = read_results(runs_csv(out))
    assert len(rows) == 1 and rows["status"].tolist() == ["ok"]  # exactly once
    assert rows["val_accuracy"].iloc[0] == reference["val_accuracy"].iloc[0]
    assert rows["val_loss"].iloc[0] == reference["val_loss"].iloc[0]
    resumed_from = json.loads(run.meta.read_text())["resumed_from_step"]
    assert resumed_from > 0 and resumed_from % 10 == 0  # the retried task continued from a saved state


def test_a_run_that_raises_is_recorded_failed_and_the_others_finish(tmp_path, client):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"review number {i},{2}\n" for i in range(300)))  # label 2: invalid
    todo = configs(tmp_path)[:2] + [tiny_config(tmp_path, loss="ce", seed=0, num_threads=1, source=str(bad))]
    failed = C.run_on_cluster(client, todo, tmp_path / "results", quiet=True)
    assert failed == [todo[2].run_id()]
    rows = read_results(runs_csv(tmp_path / "results")).set_index("run_id")
    assert rows.loc[todo[2].run_id(), "status"] == "failed"
    assert "label" in rows.loc[todo[2].run_id(), "error"]
    assert (rows.loc[[c.run_id() for c in todo[:2]], "status"] == "ok").all()


def test_gpu_workers_are_pinned_one_gpu_each():
    assert C.gpu_worker_env(4, 2) == [{"CUDA_VISIBLE_DEVICES": g} for g in ("0", "1", "0", "1")]
    assert C.worker_threads(2, cores=16) == 8 and C.worker_threads(4, cores=2) == 1
    # the GPU cluster's worker environments, on any machine (CUDA_VISIBLE_DEVICES is inert without a GPU)
    with C.dask_client(workers=2, gpus=2, quiet=True) as client:
        seen = sorted(client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values())
    assert seen == ["0", "1"]


def test_a_scheduler_that_does_not_answer_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(C, "CONNECT_TIMEOUT_S", 3)
    t0 = time.time()
    code = main(["study", "--profile", "smoke", "--seeds", "0", "--no-notebooks", "--quiet", "--out",
                 str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "no Dask scheduler answered at tcp://127.0.0.1:9" in err[0]
    assert time.time() - t0 < 60


def test_an_external_scheduler_runs_the_study(tmp_path):
    """`dask scheduler` and `dask worker` started by hand, as on two hosts, and the study sent to them."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", str(port),
                                  "--dashboard-address", ":0", "--host", "127.0.0.1"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                               "--nthreads", "1", "--nworkers", "1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        runs = run_configs(configs(tmp_path)[:2], tmp_path / "results", quiet=True,
                           scheduler=f"tcp://127.0.0.1:{port}")
        assert len(runs) == 2 and (runs["status"] == "ok").all()
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(30)


@pytest.mark.parametrize("how", ["workers", "scheduler"])
def test_notebooks_02_and_03_train_on_dask(tmp_path, client, how):
    """The notebooks' own sweep on a cluster, as a JupyterLab user sets it: notebook 02 starting a local cluster
    of 2 workers (`workers = 2`), notebook 03 sent to a running scheduler (`scheduler = ADDRESS`) in the paired
    design (BCE and the third arm per seed, their learning curves styled by arm)."""
    import nbformat
    import papermill as pm
    from distributed import get_task_stream

    from nanogpt.core.resources import REPO_ROOT

    name, loss, parameters = (("02_train_cross_entropy", "ce", {"workers": 2}) if how == "workers" else
                              ("03_train_binary_cross_entropy", "bce", {"scheduler": client.scheduler.address,
                                                                        "design": "paired"}))
    out = tmp_path / f"{name}.ipynb"
    with get_task_stream(client) as stream:  # every task the fixture's scheduler runs meanwhile
        pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                            cwd=str(REPO_ROOT / "notebooks"), parameters={
                                "profile": "smoke", "seeds": "0-1", "results_dir": str(tmp_path / "results"),
                                "figures_dir": str(tmp_path / "figures"), **parameters,
                                "overrides": {"max_steps": 20, "eval_interval": 10, "train_limit": 600,
                                              "val_limit": 200}})
    runs = read_results(runs_csv(tmp_path / "results"))
    assert set(runs["loss"]) == {loss} and (runs["status"] == "ok").all()
    if how == "workers":
        assert sorted(runs["seed"]) == [0, 1]
    else:
        assert sorted(runs["seed"]) == [0, 0, 1, 1] and set(runs["arm"]) == {"bce", "bce-headlr2-headwd0.5"}
        assert (tmp_path / "figures" / figures_tag("smoke") / "03_bce_learning_curves-paired.png").stat().st_size > 10_000
    printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                      for o in c.get("outputs", []) if o.get("output_type") == "stream")
    ran_here = {task["key"] for task in stream.data}
    if how == "workers":  # its own cluster, not the fixture's
        assert "local Dask cluster: 2 worker(s)" in printed and not ran_here
    else:
        assert ran_here == {f"train-{run_id}" for run_id in runs["run_id"]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
