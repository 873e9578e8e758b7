"""The command line, run in-process through `nanogpt.__main__.main` (one subprocess checks `python -m nanogpt`)."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from nanogpt.__main__ import main

TINY = ["--set", "block_size=64", "--set", "train_limit=256", "--set", "val_limit=128", "--set", "n_layer=1",
        "--set", "n_head=2", "--set", "n_embd=32", "--set", "eval_interval=4", "--set", "warmup_steps=2",
        "--steps", "4", "--quiet"]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Run `python -m nanogpt ARGS` in this process; returns its exit code, stdout and stderr."""
    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


@pytest.mark.parametrize("args", [
    ["train"], ["train", "--loss", "mse"], ["train", "--loss", "ce", "--profile", "huge"],
    ["study", "--seeds", "5-2"], ["study", "--seeds", "x"], ["train", "--loss", "ce", "--steps", "-3"],
    ["train", "--loss", "ce", "--set", "nonsense=1"], ["train", "--loss", "ce", "--set", "max_steps=many"],
    ["train", "--loss", "ce", "--frobnicate"], ["study", "--losses", "ce,mse"], ["launch"],
])
def test_usage_errors_are_one_line_exit_2(cli, args):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanogpt: error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_or_foreign_checkpoint(cli, tmp_path):
    r = cli("classify", "--checkpoint", str(tmp_path / "nope.pt"), "great film")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "No checkpoint at" in r.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    r = cli("classify", "--checkpoint", str(tmp_path / "junk.pt"), "great film")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "junk.pt is not a readable checkpoint" in r.stderr


@pytest.mark.slow
def test_train_study_classify(cli, tmp_path):
    out = tmp_path / "res"
    r = cli("train", "--loss", "bce", "--seed", "3", "--profile", "smoke", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["run_id"].startswith("smoke-bce-seed3-") and 0 <= info["val_accuracy"] <= 1

    r = cli("study", "--no-notebooks", "--profile", "smoke", "--seeds", "0-1", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr
    assert "paper_mean" in r.stdout and "Welch" in r.stdout
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 and sorted(runs["loss"].value_counts().tolist()) == [2, 3]

    r = cli("study", "--no-notebooks", "--profile", "smoke", "--seeds", "0-1", "--out", str(out), *TINY[:-1])
    assert r.returncode == 0 and "4 already finished, 0 to train" in r.stdout

    r = cli("classify", "--checkpoint", info["checkpoint"], "--json", "A wonderful film.", "Terrible.")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["text"] for x in records] == ["A wonderful film.", "Terrible."]
    assert all(0 <= x["positive_probability"] <= 1 and x["label"] in (0, 1) for x in records)

    r = cli("classify", "--checkpoint", info["checkpoint"], "   ")
    assert r.returncode == 1 and "empty" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    """The real entry point, as a user types it: usage errors and a failure are one line, never a traceback."""
    r = subprocess.run([sys.executable, "-m", "nanogpt", "train", "--loss", "mse"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("nanogpt: error:") and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "nanogpt", "classify", "--checkpoint", str(tmp_path / "no.pt"), "hi"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "No checkpoint at" in r.stderr and "Traceback" not in r.stderr


def test_bench_without_its_optional_packages_says_how_to_get_them(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    r = cli("bench", "--quick")
    assert r.returncode == 1 and "requirements-bench.txt" in r.stderr and r.stderr.count("\n") == 1


def test_study_trains_on_the_terminal_before_the_notebooks_analyse(cli, tmp_path, monkeypatch):
    """`make study` once showed only papermill's cell counter while the runs trained inside notebook 02's kernel:
    now the estimate, each run and its result are printed here, and the notebooks start over finished runs."""
    from nanogpt.run.results import read_results, runs_csv
    from nanogpt.study import runs as study

    seen = {}

    def notebooks(profile, seeds, source, results_dir, *args, **kwargs):
        seen["finished_before"] = len(read_results(runs_csv(results_dir), finished_only=True))
        return {}

    monkeypatch.setattr(study, "run_notebooks", notebooks)
    r = cli("study", "--profile", "smoke", "--seeds", "0", "--out", str(tmp_path / "r"),
            "--figures", str(tmp_path / "f"), *[a for a in TINY if a != "--quiet"])
    assert r.returncode == 0, r.stderr
    assert seen["finished_before"] == 2  # both runs trained before the first notebook
    out = r.stdout
    assert "0 already finished, 2 to train" in out and "estimated" in out.lower()
    assert "[1/2] ce seed 0" in out and "[2/2] bce seed 0" in out and out.count("val accuracy") == 2
    assert out.index("[2/2]") < out.index("the notebooks now analyse them")
