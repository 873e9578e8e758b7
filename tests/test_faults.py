"""Faults tried for real: a SIGKILLed training process, a NaN loss, concurrent writers of runs.csv."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import tiny_config

from nanogpt.run.profiles import get_profile
from nanogpt.run.results import read_results, upsert_result_row
from nanogpt.run.train import NonFiniteLossError, train

SETTINGS = dict(block_size=64, train_limit=512, val_limit=128, n_layer=1, n_head=2, n_embd=32, dropout=0.1,
                gelu="none", batch_size=16, max_steps=300, warmup_steps=10, eval_interval=50,
                checkpoint_interval=20, learning_rate=2e-3)


def _cli_args(out, *extra):
    args = [sys.executable, "-m", "nanogpt", "train", "--loss", "bce", "--seed", "5", "--profile", "smoke",
            "--out", str(out), "--steps", str(SETTINGS["max_steps"]), *extra]
    for k, v in SETTINGS.items():
        if k != "max_steps":
            args += ["--set", f"{k}={v}"]
    return args


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_identical(tmp_path):
    cfg = get_profile("smoke").make_config("bce", 5, out_dir=str(tmp_path / "ref"), quiet=True, **SETTINGS)
    reference = train(cfg)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli_args(out, "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / "runs" / reference.run_id / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_step = torch.load(state, weights_only=True)["step"]
    assert 0 < saved_step < 300
    assert not (out / "runs.csv").exists()  # nothing half-finished was recorded as a result

    resumed = subprocess.run(_cli_args(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {saved_step}" in resumed.stdout
    info = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert info["val_accuracy"] == reference.val_accuracy
    assert info["val_loss"] == reference.val_loss
    history = pd.read_csv(out / "runs" / reference.run_id / "history.csv")
    pd.testing.assert_frame_equal(history[["step", "train_loss", "val_loss", "val_accuracy"]],
                                  reference.history[["step", "train_loss", "val_loss", "val_accuracy"]])
    ref_state = torch.load(reference.checkpoint, weights_only=True)["model_state"]
    new_state = torch.load(out / "runs" / reference.run_id / "model.pt", weights_only=True)["model_state"]
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    assert not state.exists()  # a finished run leaves no resumable state behind


def test_resume_refuses_a_state_of_another_config(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=4, eval_interval=2)
    state = tmp_path / "results" / "runs" / cfg.run_id() / "state.pt"
    state.parent.mkdir(parents=True)
    torch.save({"config": {"loss": "other"}, "step": 2}, state)
    with pytest.raises(ValueError, match="another configuration"):
        train(cfg, resume=True)
    state.write_bytes(b"torn")
    with pytest.raises(ValueError, match="cannot be read to resume"):
        train(cfg, resume=True)
    assert train(cfg, resume=False).resumed_from_step == 0  # without --resume the run starts afresh


def test_nan_loss_is_recorded_as_failed_never_as_accuracy(tmp_path, monkeypatch):
    from nanogpt.core import losses
    real = losses.CrossEntropyCriterion.loss
    calls = {"n": 0}

    def flaky(self, logits, labels):  # training steps 0-11 are fine, step 12 goes NaN
        value = real(self, logits, labels)
        if logits.requires_grad:
            calls["n"] += 1
            if calls["n"] > 12:
                return value * float("nan")
        return value

    monkeypatch.setattr(losses.CrossEntropyCriterion, "loss", flaky)
    cfg = tiny_config(tmp_path, max_steps=20, eval_interval=5)
    with pytest.raises(NonFiniteLossError, match=r"at step 12 .*last good state \(step 10\)"):
        train(cfg)
    runs = read_results(tmp_path / "results" / "runs.csv")
    assert runs["status"].tolist() == ["failed"] and runs["val_accuracy"].isna().all()
    assert read_results(tmp_path / "results" / "runs.csv", finished_only=True).empty
    state = torch.load(tmp_path / "results" / "runs" / cfg.run_id() / "state.pt", weights_only=True)
    assert state["step"] == 10


def _writer(path, worker, n):
    for i in range(n):
        upsert_result_row(path, {"run_id": f"w{worker}-{i}", "loss": "ce", "val_accuracy": 0.5})


@pytest.mark.slow
def test_concurrent_writers_lose_no_rows(tmp_path):
    path = tmp_path / "runs.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    runs = pd.read_csv(path)
    assert len(runs) == 100 and runs["run_id"].nunique() == 100


def test_full_disk_names_the_path_and_leaves_no_torn_file(tmp_path, monkeypatch):
    import errno

    from nanogpt.core import artifacts
    target = tmp_path / "out" / "runs.csv"
    artifacts.atomic_write_text(target, "old contents\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "fsync", no_space)
    with pytest.raises(OSError, match=r"Cannot write .*runs.csv: No space left on device"):
        artifacts.atomic_write_text(target, "new contents\n")
    assert target.read_text() == "old contents\n"  # the old file, whole
    assert [p.name for p in target.parent.iterdir()] == ["runs.csv"]  # no temporary left behind


@pytest.mark.slow
def test_unwritable_results_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "nanogpt", "train", "--loss", "ce", "--profile", "smoke", "--quiet",
                        "--out", str(blocker / "results"), "--steps", "4", "--set", "eval_interval=2",
                        "--set", "train_limit=64", "--set", "val_limit=32"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "Cannot write" in r.stderr and "a_file/results" in r.stderr
