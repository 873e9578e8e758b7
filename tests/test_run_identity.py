"""Nothing stale, nothing stranded: each failure of issue 15 reproduced, then shown fixed."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from nanogpt.__main__ import main
from nanogpt.data.imdb import DataValidationError, load_imdb
from nanogpt.run.checkpoints import CheckpointError
from nanogpt.run.results import read_results, runs_csv, upsert_result_row
from nanogpt.run.rundir import RunDir, finished_run_ids
from nanogpt.run.train import train
from nanogpt.study.runs import run_configs, run_study, study_rows

RESUMABLE = dict(train_limit=256, val_limit=64, batch_size=8, max_steps=16, eval_interval=8, checkpoint_interval=4)
TINY = dict(block_size=64, n_layer=1, n_head=2, n_embd=32, dropout=0.0, gelu="none", batch_size=8, max_steps=4,
            warmup_steps=1, eval_interval=2, learning_rate=2e-3)


def _csv(path, n, offset=0):
    reviews = load_imdb()["train"].select(range(offset, offset + n)).to_pandas()
    reviews.to_csv(path, index=False)
    return str(path)


# ---------------------------------------------------------------------------------------- 1. identity


def test_editing_a_csv_in_place_is_a_new_run_and_moving_it_is_not(tmp_path):
    out = tmp_path / "results"
    data = _csv(tmp_path / "mine.csv", 40)
    first = train(tiny_config(tmp_path, source=data, train_limit=None, val_limit=None, **TINY))
    assert first.row["n_train"] == 32 and first.row["n_val"] == 8

    _csv(tmp_path / "mine.csv", 400)  # same path, new content: not the same computation
    cfg = tiny_config(tmp_path, source=data, train_limit=None, val_limit=None, **TINY)
    assert cfg.run_id() != first.run_id and cfg.run_id() not in finished_run_ids(out)
    rows = run_configs([cfg], out, quiet=True)
    assert rows["n_train"].tolist() == [320] and rows["n_val"].tolist() == [80]

    moved = tmp_path / "elsewhere" / "renamed.csv"
    moved.parent.mkdir()
    shutil.copy(data, moved)  # same content under another path: the same computation, reused
    assert tiny_config(tmp_path, source=str(moved), train_limit=None, val_limit=None, **TINY).run_id() == cfg.run_id()


def test_precision_is_part_of_the_identity(tmp_path):
    fp32, bf16 = (tiny_config(tmp_path, precision=p) for p in ("fp32", "bf16"))
    assert fp32.run_id() != bf16.run_id()
    from nanogpt.core.runtime import cpu_has_fast_bf16

    auto = tiny_config(tmp_path, precision="auto")  # "auto" is whatever this machine resolves it to
    assert auto.run_id() == (bf16 if cpu_has_fast_bf16() else fp32).run_id()


# ---------------------------------------------------------------------------------------- 2. resume


class _Killed(Exception):
    pass


def _interrupted_run(tmp_path, monkeypatch, **changes):
    """A run stopped after its state was saved at step 8 (as a SIGKILL would leave it)."""
    from nanogpt.run import train as train_module
    real = train_module.learning_rate_at

    def stop_at_10(step, cfg):
        if step == 10:
            raise _Killed()
        return real(step, cfg)

    cfg = tiny_config(tmp_path, **{**RESUMABLE, **changes})
    monkeypatch.setattr(train_module, "learning_rate_at", stop_at_10)
    with pytest.raises(_Killed):
        train(cfg)
    monkeypatch.setattr(train_module, "learning_rate_at", real)
    return cfg


@pytest.mark.parametrize("spelling", ["trailing_slash", "relative", "moved", "other_interval"])
def test_resume_finds_its_state_however_the_folder_is_spelled(tmp_path, monkeypatch, spelling):
    reference = train(tiny_config(tmp_path / "ref", **RESUMABLE))
    cfg = _interrupted_run(tmp_path, monkeypatch)
    out = tmp_path / "results"
    assert torch.load(RunDir(out, cfg.run_id()).state, weights_only=True)["step"] == 8
    if spelling == "trailing_slash":
        cfg = cfg.replace(out_dir=str(out) + "/")
    elif spelling == "relative":
        monkeypatch.chdir(tmp_path)
        cfg = cfg.replace(out_dir="results")
    elif spelling == "moved":
        shutil.move(str(out), str(tmp_path / "moved"))
        cfg = cfg.replace(out_dir=str(tmp_path / "moved"))
    else:
        cfg = cfg.replace(checkpoint_interval=7)
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from_step == 8  # it continued from the saved state, not from step 0
    assert json.loads(RunDir(cfg.out_dir, cfg.run_id()).meta.read_text())["resumed_from_step"] == 8
    assert resumed.val_accuracy == reference.val_accuracy and resumed.val_loss == reference.val_loss
    assert not RunDir(cfg.out_dir, cfg.run_id()).state.exists()


# ---------------------------------------------------------------------------------------- 3. sizes


def test_training_split_smaller_than_a_batch_is_one_clear_error(tmp_path):
    with pytest.raises(DataValidationError, match=r"training split has 16 reviews \(train_limit=16\), fewer "
                                                  r"than one batch of 32.*batch_size=16"):
        train(tiny_config(tmp_path, train_limit=16, batch_size=32))
    tiny = _csv(tmp_path / "ten.csv", 10)
    with pytest.raises(DataValidationError, match="ten.csv: the training split has 8 reviews"):
        train(tiny_config(tmp_path, source=tiny, train_limit=None, val_limit=None, batch_size=16))


def test_too_few_rows_to_split_is_one_clear_error(tmp_path):
    five = _csv(tmp_path / "five.csv", 5, offset=12_480)  # both classes, but too few to split 20% off
    with pytest.raises(DataValidationError, match=r"five.csv: 5 reviews .* too few .* at least \d+"):
        load_imdb(five)


# ---------------------------------------------------------------------------------------- 4. disk


def test_finished_run_leaves_no_state_and_stale_temp_files_are_cleaned(tmp_path, monkeypatch):
    cfg = _interrupted_run(tmp_path, monkeypatch)
    run = RunDir(cfg.out_dir, cfg.run_id())
    stale = run.path / ".model.pt.abc123.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"half a file")
    train(cfg, resume=True)
    assert not stale.exists() and not run.state.exists()
    index_tmp = runs_csv(cfg.out_dir).parent / ".runs.csv.xyz.tmp"
    index_tmp.write_bytes(b"torn")
    run_configs([cfg.replace(seed=1)], cfg.out_dir, quiet=True)
    assert not index_tmp.exists()


@pytest.mark.parametrize("keep", ["final", "half", "none", "all"])
def test_keep_bounds_the_disk_and_never_changes_the_numbers(tmp_path, keep):
    from nanogpt.serve.predict import Classifier

    full = train(tiny_config(tmp_path / "full", max_steps=6, eval_interval=3, checkpoint_interval=3))
    result = train(tiny_config(tmp_path / keep, max_steps=6, eval_interval=3, checkpoint_interval=3, keep=keep))
    assert result.run_id == full.run_id and result.val_accuracy == full.val_accuracy  # keep is not identity
    run = RunDir(tmp_path / keep / "results", result.run_id)
    assert run.finished_row() is not None and run.val_predictions.is_file()
    assert run.state.exists() == (keep == "all")
    if keep == "none":
        assert not run.model.exists()
        return
    size, full_size = run.model.stat().st_size, full.checkpoint.stat().st_size
    if keep == "half":
        assert size < 0.6 * full_size
        texts = ["A wonderful film.", "Awful."]
        half_p = Classifier.load(run.model).predict(texts).probabilities
        assert half_p == pytest.approx(Classifier.load(full.checkpoint).predict(texts).probabilities, abs=2e-3)
    else:  # the same fp32 weights; the files differ only by the folder names in their recorded config
        assert abs(size - full_size) <= 256
        weights = torch.load(run.model, weights_only=True)["model_state"]
        reference = torch.load(full.checkpoint, weights_only=True)["model_state"]
        assert all(weights[k].dtype == torch.float32 and torch.equal(weights[k], reference[k]) for k in reference)


def test_committed_rows_of_keep_none_runs_are_not_trained_again(tmp_path, capsys):
    """A clone of committed results has runs.csv but no run folders. A --keep none study wants only the rows,
    so going on from there it trains only what is missing; a study that asks for weights (which notebook 05 and
    `classify` need) trains again a run whose folder is gone."""
    none = [tiny_config(tmp_path, max_steps=4, eval_interval=2, keep="none", seed=s) for s in (0, 1)]
    final = [tiny_config(tmp_path, max_steps=4, eval_interval=2, keep="final", seed=s) for s in (2, 3)]
    out = Path(none[0].out_dir)
    run_configs([none[0], final[0]], out, quiet=True)
    before = read_results(runs_csv(out)).set_index("run_id")
    shutil.rmtree(out / "runs")  # what `git clone` gives: the index without the folders
    capsys.readouterr()
    rows = run_configs(none + final, out)
    printed = capsys.readouterr().out
    assert "1 already finished, 3 to train (1 of the finished known from runs.csv alone" in printed
    trained = [line.split("] ", 1)[1] for line in printed.splitlines() if line.startswith("[")]
    assert trained == ["ce seed 1", "ce seed 2", "ce seed 3"], printed
    after = rows.set_index("run_id")
    kept = none[0].run_id()
    assert after.loc[kept, "val_accuracy"] == before.loc[kept, "val_accuracy"] and len(after) == 4
    assert not RunDir(out, kept).path.exists()  # nothing was made up for it
    final_row = final[0].run_id()  # a run that kept weights, asked for again without: its row is enough
    assert run_configs([final[0].replace(keep="none")], out, quiet=True)["run_id"].tolist() == [final_row]
    shutil.rmtree(out / "runs")
    capsys.readouterr()
    run_configs([final[0].replace(keep="none")], out)
    assert "1 already finished, 0 to train" in capsys.readouterr().out
    run_configs([none[0].replace(keep="final")], out, quiet=True)  # the same run, now with its weights
    assert RunDir(out, kept).model.is_file() and read_results(runs_csv(out)).set_index("run_id").loc[
        kept, "val_accuracy"] == before.loc[kept, "val_accuracy"]


def test_a_study_reports_its_own_runs_only(tmp_path):
    """The study's closing table (after the notebooks) is made of the runs it asked for: rows of the same
    profile and seed from another precision (a bf16 machine's, committed beside this machine's fp32 ones) or of
    other seeds are not pooled in; it once printed 15 fp32 + 5 bf16 runs of `cpu` as one sample of 20."""
    over = dict(TINY, train_limit=256, val_limit=64, precision="fp32", keep="none")
    mine = run_study("smoke", seeds=[0], out_dir=tmp_path, quiet=True, **over)
    assert len(mine) == 2 and set(mine["precision"]) == {"fp32"}
    for i, (precision, seed) in enumerate([("bf16", 0), ("fp32", 5)]):
        other = mine.iloc[0].to_dict() | {"run_id": f"elsewhere-{i}", "precision": precision, "seed": seed}
        upsert_result_row(runs_csv(tmp_path), other)
    assert len(read_results(runs_csv(tmp_path))) == 4
    rows = study_rows("smoke", "fixed", [0], out_dir=tmp_path, **over)
    assert sorted(rows["run_id"]) == sorted(mine["run_id"])


# ---------------------------------------------------------------------------------------- 5. the index


def test_garbage_index_is_rebuilt_from_the_run_folders(tmp_path, capsys):
    configs = [tiny_config(tmp_path, seed=s, **TINY) for s in (0, 1)]
    run_configs(configs, configs[0].out_dir, quiet=True)
    csv = runs_csv(configs[0].out_dir)
    good = read_results(csv)
    csv.write_bytes(b"\xff\xfe\x00garbage\x00\x81" * 100)
    rows = run_configs(configs, configs[0].out_dir)
    out = capsys.readouterr().out
    assert "runs.csv is not a readable results index" in out and "rebuilt it from 2 run folder(s)" in out
    assert "2 already finished, 0 to train" in out
    assert sorted(rows["run_id"]) == sorted(good["run_id"])
    assert rows.set_index("run_id")["val_accuracy"].to_dict() == good.set_index("run_id")["val_accuracy"].to_dict()


def test_row_torn_inside_its_config_is_not_accepted(tmp_path, capsys):
    from nanogpt.run.results import ResultsIndexError

    cfg = tiny_config(tmp_path, **TINY)
    run_configs([cfg], cfg.out_dir, quiet=True)
    csv = runs_csv(cfg.out_dir)
    text = csv.read_text()
    cut = text.index('""n_embd""')  # the row ends inside its quoted config JSON
    csv.write_text(text[:cut] + '"\n')
    with pytest.raises(ResultsIndexError, match="runs.csv"):
        read_results(csv)
    rows = run_configs([cfg], cfg.out_dir)
    assert "rebuilt" in capsys.readouterr().out and len(rows) == 1


def test_truncated_or_replaced_weights_do_not_count_as_finished(tmp_path):
    cfg = tiny_config(tmp_path, **TINY)
    first = train(cfg)
    run = RunDir(cfg.out_dir, cfg.run_id())
    data = run.model.read_bytes()
    run.model.write_bytes(data[: len(data) // 2])
    assert cfg.run_id() not in finished_run_ids(cfg.out_dir)
    rows = run_configs([cfg], cfg.out_dir, quiet=True)  # trained again, not trusted
    assert rows["val_accuracy"].tolist() == [first.val_accuracy]
    assert cfg.run_id() in finished_run_ids(cfg.out_dir)


# ---------------------------------------------------------------------------------------- 6. smaller ones


def test_random_bytes_checkpoint_never_suggests_weights_only_false(tmp_path):
    from nanogpt.serve.predict import Classifier

    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        Classifier.load(path)
    assert "weights_only" not in str(info.value) and "random.pt" in str(info.value)


def test_classify_dash_reads_reviews_from_stdin(tiny_run, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("A wonderful film.\n\nDreadful, boring.\n"))
    assert main(["classify", "--checkpoint", str(tiny_run["ce"].checkpoint), "--json", "-"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["A wonderful film.", "Dreadful, boring."]


def test_profile_name_cannot_leave_the_results_folder(tmp_path):
    with pytest.raises(ValueError, match="profile name"):
        tiny_config(tmp_path, profile="../../../x").validate()
    from nanogpt.run.rundir import RunFolderError

    with pytest.raises(RunFolderError):
        RunDir(tmp_path, "../x")


@pytest.mark.parametrize("field, option", [("out_dir", "--out"), ("quiet", "--quiet"), ("seed", "--seed"),
                                           ("max_steps", "--steps")])
def test_set_refuses_fields_with_their_own_option(capsys, field, option):
    assert main(["train", "--loss", "ce", "--set", f"{field}=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--set {field}: use {option}" in err


def test_cli_loss_choices_match_the_criteria():
    from nanogpt.__main__ import LOSS_CHOICES
    from nanogpt.core.losses import LOSS_NAMES

    assert LOSS_CHOICES == LOSS_NAMES


def _tiny_cli(out, *extra):
    args = [sys.executable, "-m", "nanogpt", *extra, "--profile", "smoke", "--out", str(out)]
    if "--steps" not in extra:
        args += ["--steps", str(TINY["max_steps"])]
    for k, v in dict(TINY, train_limit=256, val_limit=64).items():
        if k != "max_steps":
            args += ["--set", f"{k}={v}"]
    return args


def _signal_when_seen(proc: subprocess.Popen, stream, seen, sig: int, timeout: float = 300) -> list[str]:
    """Read `stream` line by line until `seen(line)`, then send `sig` and read to the end: the command itself says
    when it is where the test wants it, instead of the test guessing how long that takes on a loaded machine.
    Returns the stream's lines; fails if the command ended (or the deadline passed) before the line came."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stream] + [lines.put(None)], daemon=True)
    reader.start()
    got, deadline, sent = [], time.time() + timeout, False
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        got.append(line)
        if not sent and seen(line):
            proc.send_signal(sig)
            sent = True
    if not sent:
        proc.kill()
        pytest.fail(f"the command never printed the line the test waits for: {got[-5:]}")
    reader.join(timeout=60)
    return got


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """SIGTERM once training has started (the command prints its run line just before the first step)."""
    out = tmp_path / "results"
    args = _tiny_cli(out, "train", "--loss", "ce", "--steps", "100000")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _signal_when_seen(proc, proc.stdout, lambda line: "M parameters" in line, signal.SIGTERM)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp"))


# Run as `python -m nanogpt`, with one change: when torch's import asks for torch.nn, it waits there (up to 60 s)
# before going on. The signal the test sends on seeing torch._C loaded lands in that wait, inside torch's import,
# however loaded the machine is (a parent slower than its child let the import reach torch.nn first).
_HELD_IMPORT = """
import runpy, signal, sys, time

# Ctrl-C as a terminal delivers it, whatever this test's own launcher did: a shell's background job (make test
# started with &) ignores SIGINT, and a child inherits that, so Python would not install its handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

class HoldTorchNn:
    def find_spec(self, name, path=None, target=None):
        if name == "torch.nn":
            time.sleep(60)
        return None

sys.meta_path.insert(0, HoldTorchNn())
sys.argv[0] = "nanogpt"
runpy.run_module("nanogpt", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """Ctrl-C while the command imports torch: the interrupted exit and its one line, never a traceback.
    `-X importtime` makes Python report each import as it completes, so the signal goes out when one of torch's
    own modules has loaded (torch._C) and the import is known to be under way; the import is held before
    torch.nn (see _HELD_IMPORT), and the test checks that torch.nn never loaded, so a signal that came too late
    would fail instead of passing. (Python reports an import as it ends, also when it ends by the exception, so
    the line for `torch` itself says nothing.)"""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-c", _HELD_IMPORT, "classify", "--checkpoint",
                             "x.pt", "hi"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    lines = _signal_when_seen(proc, proc.stderr, lambda line: line.rsplit("|", 1)[-1].strip() == "torch._C",
                              signal.SIGINT, timeout=120)
    proc.wait(timeout=60)
    err = [line for line in lines if not line.startswith("import time:")]
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    assert "torch._C" in imported and "torch.nn" not in imported, "the signal did not land inside torch's import"
    assert time.time() - started < 60  # the signal ended the held import; it did not run out
    assert proc.returncode == 130, err
    assert len(err) == 1 and err[0].startswith("nanogpt: interrupted") and "Traceback" not in "".join(err)


@pytest.mark.slow
def test_two_studies_on_one_folder_split_the_work(tmp_path):
    out = tmp_path / "results"
    args = _tiny_cli(out, "study", "--no-notebooks", "--seeds", "0-2")
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outputs]
    trained = sum(o.count("parameters (") for o, _ in outputs)  # one line per run actually trained
    assert trained == 6, [o for o, _ in outputs]
    runs = read_results(runs_csv(out))
    assert len(runs) == 6 and runs["run_id"].nunique() == 6


def test_fields_added_later_leave_earlier_ids_alone(tmp_path):
    """A run recorded before head_init and the head scales existed keeps its id: at their neutral values those
    fields are not part of the identity; any other value is."""
    from nanogpt.run.config import IDENTITY_NEUTRAL

    cfg = tiny_config(tmp_path)
    identity = cfg.identity()
    assert not set(IDENTITY_NEUTRAL) & set(identity)
    assert tiny_config(tmp_path, head_lr_scale=2.0).run_id() != cfg.run_id()
    assert tiny_config(tmp_path, head_init="paired").run_id() != cfg.run_id()


# ------------------------------------------------- the resume paths a study takes (killers of surviving mutants)

def test_a_state_of_another_run_is_refused_even_when_its_config_is_the_same(tmp_path, monkeypatch):
    """A state names the run it belongs to (the data's content is part of the run id, not of the config)."""
    cfg = _interrupted_run(tmp_path, monkeypatch)
    path = RunDir(cfg.out_dir, cfg.run_id()).state
    state = torch.load(path, weights_only=True)
    torch.save({**state, "run_id": "test-ce-seed0-0123abcd"}, path)
    with pytest.raises(CheckpointError, match=r"state\.pt belongs to another configuration; delete it"):
        train(cfg, resume=True)


def test_a_state_from_before_run_ids_resumes_when_its_config_matches(tmp_path, monkeypatch):
    cfg = _interrupted_run(tmp_path, monkeypatch)
    path = RunDir(cfg.out_dir, cfg.run_id()).state
    state = torch.load(path, weights_only=True)
    assert state["run_id"] == cfg.run_id()
    del state["run_id"]
    state["config"] = {**state["config"], "checkpoint_interval": 5, "quiet": False}  # run-local: not the identity
    torch.save(state, path)
    assert train(cfg, resume=True).resumed_from_step == 8


def test_a_state_that_is_not_a_dict_is_refused_with_its_path(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=4, eval_interval=2)
    path = RunDir(cfg.out_dir, cfg.run_id()).state
    path.parent.mkdir(parents=True)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=rf"^{path} is not a training state of this project; delete it"):
        train(cfg, resume=True)
    path.write_bytes(b"torn")
    with pytest.raises(CheckpointError, match=rf"^{path} cannot be read to resume \(.*\)\. Fix: delete it to "
                                              r"start the run afresh\.$"):
        train(cfg, resume=True)


def test_a_study_resumes_an_interrupted_run_from_its_saved_step(tmp_path, monkeypatch):
    cfg = _interrupted_run(tmp_path, monkeypatch)
    rows = run_configs([cfg], cfg.out_dir, quiet=True)
    meta = json.loads(RunDir(cfg.out_dir, cfg.run_id()).meta.read_text())
    assert meta["resumed_from_step"] == 8 and rows["status"].tolist() == ["ok"]


def test_train_unless_finished_returns_a_finished_runs_row_without_training(tmp_path, monkeypatch):
    from nanogpt.run import train as train_module

    cfg = tiny_config(tmp_path, max_steps=4, eval_interval=2)
    run = RunDir(cfg.out_dir, cfg.run_id())
    status, row = train_module.train_unless_finished(cfg, run)
    assert status == "ok" and row["run_id"] == cfg.run_id() and row["status"] == "ok"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train_claimed", no_training)
    assert train_module.train_unless_finished(cfg, run) == ("ok", row)


def test_train_unless_finished_reports_a_nan_loss_as_a_failed_row(tmp_path, monkeypatch):
    from nanogpt.core import losses
    from nanogpt.run import train as train_module

    real = losses.CrossEntropyCriterion.loss
    monkeypatch.setattr(losses.CrossEntropyCriterion, "loss",
                        lambda self, logits, labels: real(self, logits, labels) * float("nan"))
    cfg = tiny_config(tmp_path, max_steps=4, eval_interval=2)
    status, row = train_module.train_unless_finished(cfg, RunDir(cfg.out_dir, cfg.run_id()))
    assert status == "failed" and row["status"] == "failed" and row["run_id"] == cfg.run_id()
    assert pd.isna(row["val_accuracy"]) and row["steps"] == 0
    assert row["error"].startswith(f"run {cfg.run_id()}: loss became nan at step 0 ")
    assert row["n_train"] == 512 and row["n_val"] == 256 and row["device"] == "cpu"
    meta = json.loads(RunDir(cfg.out_dir, cfg.run_id()).meta.read_text())
    assert meta["config"] == json.loads(row["config"]) and meta["environment"]["device"] == "cpu"
    assert meta["environment"]["precision"] == row["precision"] in ("fp32", "bf16")


def test_training_a_run_another_process_holds_is_one_clear_error(tmp_path):
    import os

    from nanogpt.run.train import RunClaimedError

    cfg = tiny_config(tmp_path, max_steps=4, eval_interval=2)
    run = RunDir(cfg.out_dir, cfg.run_id())
    with run.claim() as mine:  # a second open file's flock conflicts even within one process
        assert mine
        with pytest.raises(RunClaimedError, match=rf"^run {cfg.run_id()} is being trained by another process \(pid "
                                                  rf"{os.getpid()}\); its result will appear in "
                                                  rf"{runs_csv(cfg.out_dir)}\.$"):
            train(cfg)
    assert not run.meta.exists()  # nothing was trained


def test_a_resumed_run_keeps_the_development_choice_it_had_made(tmp_path, monkeypatch):
    from nanogpt.run.selection import DevSelection

    cfg = _interrupted_run(tmp_path, monkeypatch, dev_fraction=0.2, keep_best=True)
    saved = torch.load(RunDir(cfg.out_dir, cfg.run_id()).state, weights_only=True)["selection"]
    assert saved["best_step"] == 8  # the one validation pass before the interruption
    loaded = []
    real_load = DevSelection.load
    monkeypatch.setattr(DevSelection, "load", lambda self, state: loaded.append(state) or real_load(self, state))
    resumed = train(cfg, resume=True)
    assert len(loaded) == 1 and set(loaded[0]) == set(saved) and loaded[0]["best_step"] == 8
    assert resumed.resumed_from_step == 8
    assert resumed.row["best_step"] in (8, 16)


class _Touch:
    """Unpickled, it would create a file: what a state file must never be able to do."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_state_that_would_run_code_is_refused_and_runs_none(tmp_path, monkeypatch):
    cfg = _interrupted_run(tmp_path, monkeypatch)
    path = RunDir(cfg.out_dir, cfg.run_id()).state
    marker = tmp_path / "code-ran"
    torch.save({**torch.load(path, weights_only=True), "extra": _Touch(marker)}, path)
    with pytest.raises(CheckpointError, match=r"state\.pt cannot be read to resume \(Unsupported global: GLOBAL "):
        train(cfg, resume=True)
    assert not marker.exists()


def test_a_run_started_without_resume_starts_afresh_beside_a_saved_state(tmp_path, monkeypatch):
    cfg = _interrupted_run(tmp_path, monkeypatch)
    assert train(cfg).resumed_from_step == 0  # resume is asked for, never assumed


def test_a_training_part_too_small_for_a_development_slice_is_named_as_such(tmp_path):
    source = _csv(tmp_path / "twelve.csv", 12)
    cfg = tiny_config(tmp_path, source=source, train_limit=None, val_limit=None, batch_size=2, val_fraction=0.5,
                      dev_fraction=0.1, keep_best=True)
    with pytest.raises(DataValidationError, match=rf"^{re.escape(source)} training part: "):
        train(cfg)


def test_a_resumed_run_that_goes_nan_names_the_state_it_resumed_from(tmp_path, monkeypatch):
    """The state a run resumed from is its last good one until it saves another: a loss that turns NaN on the
    first resumed step says so, and the state (step 8) is left for a retry."""
    from nanogpt.core import losses
    from nanogpt.run.train import NonFiniteLossError

    cfg = _interrupted_run(tmp_path, monkeypatch)  # state saved at step 8
    real = losses.CrossEntropyCriterion.loss
    monkeypatch.setattr(losses.CrossEntropyCriterion, "loss",
                        lambda self, logits, labels: real(self, logits, labels) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 8 .*the last good state \(step 8\) is kept in .*state\.pt"):
        train(cfg, resume=True)
    assert torch.load(RunDir(cfg.out_dir, cfg.run_id()).state, weights_only=True)["step"] == 8
