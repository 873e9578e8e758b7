"""The main job (`python -m nanogpt study`, what `make study` runs) on a fresh clone: it trains nothing, runs the
notebooks on the decided population (stubbed here: they take minutes) and ends with both verdicts, whose numbers
are those of the committed reports; and the study's outputs leave tracked files alone unless their numbers change.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from nanogpt.core.resources import REPO_ROOT


@pytest.fixture()
def clone(tmp_path):
    """What `git clone` gives of results/: every tracked file, no run folders."""
    import subprocess

    out = tmp_path / "results"
    out.mkdir()
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    return out


def _no_training(cfg, run):
    raise AssertionError(f"the main job trained {cfg.run_id()} on a clone of the committed results")


def _main_job(clone, monkeypatch, capsys, *extra):
    from nanogpt.__main__ import main
    from nanogpt.study import runs as R

    calls = []
    monkeypatch.setattr(R, "run_notebooks", lambda *a, **k: calls.append((a, k)) or {"04": clone / "04.ipynb"})
    monkeypatch.setattr(R, "train_unless_finished", _no_training)  # a clone trains nothing: a run here fails at once
    monkeypatch.setattr("nanogpt.run.profiles.default_profile_name", lambda: "cpu")  # a CPU, whatever runs this
    code = main(["study", "--out", str(clone), "--figures", str(clone.parent / "figures"), "--reports",
                 str(clone.parent / "reports"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, calls


def test_the_main_job_ends_with_both_decided_verdicts(clone, monkeypatch, capsys):
    before = {p: p.read_bytes() for p in clone.rglob("*") if p.is_file()}
    code, out, err, calls = _main_job(clone, monkeypatch, capsys)
    assert code == 0, err
    # nothing trained: every run of the decided study is a committed row
    assert out.count(", 0 to train") == 3 and not (clone / "runs").exists()
    assert [c[0][0] for c in calls] == ["fast"]  # the notebooks ran on the decided population
    powered = json.loads((REPO_ROOT / "results" / "powered-fast.json").read_text())
    stability = json.loads((REPO_ROOT / "results" / "stability-fast.json").read_text())
    acc, churn = powered["accuracy"], stability["primary"]
    answer = out[out.index("The answer"):]
    assert "BCE is more accurate (paper: +0.26 points)? no: equivalent (margin +-0.5 points, plan 1)" in answer
    assert (f"BCE - CE = {acc['diff']:+.2f} points, 95% CI [{acc['ci_low']:+.2f}, {acc['ci_high']:+.2f}], "
            f"TOST p = {acc['tost_p']:.2g}; {acc['n_ce']} CE and {acc['n_bce']} BCE runs") in answer
    assert "BCE is more stable (paper: max-min 1.04 against 2.36)? no: equally stable within the band " \
           f"[{churn['band'][0]:.2f}, {churn['band'][1]:.2f}]" in answer
    assert (f"Two CE runs disagree on {100 * churn['churn_ce']:.2f}% of validation reviews, two BCE runs on "
            f"{100 * churn['churn_bce']:.2f}%; ratio BCE/CE {churn['ratio']:.3f}, 95% CI "
            f"[{churn['ratio_ci'][0]:.3f}, {churn['ratio_ci'][1]:.3f}]") in answer
    assert "Runs: 200 per loss on the fixed split (seeds 0-199)" in answer
    for processor in {p["processor"] for p in stability["samples"]["all"]["processors"]}:
        assert processor in answer
    assert f"Reports: {clone / 'powered-fast.json'}" in answer and "Executed notebooks:" in answer
    # and the committed files are as they were
    assert {p: p.read_bytes() for p in clone.rglob("*") if p.is_file() and p.suffix != ".lock"} == \
        {p: b for p, b in before.items() if p.suffix != ".lock"}


@pytest.mark.parametrize("processor", [
    {"processor": "AMD EPYC (AuthenticAMD family 25 model 17)", "isa": "avx2 avx512f avx512_bf16; torch AVX512"},
    {"processor": "AMD EPYC (AuthenticAMD family 25 model 1)", "isa": "avx2; torch AVX2"}])
def test_the_main_job_trains_nothing_on_the_processor_that_trained_its_rows_or_another(clone, monkeypatch, capsys,
                                                                                        processor):
    """The committed decided runs kept rows and predictions, no weights: on the processor that trained them (their
    rows are this machine's, not another's) they are finished too, not trained again for weights."""
    from nanogpt.core import runtime

    monkeypatch.setattr(runtime, "processor_of", lambda device_type="cpu": dict(processor))
    code, out, err, _ = _main_job(clone, monkeypatch, capsys, "--no-notebooks")
    assert code == 0, err
    assert out.count(", 0 to train") == 3 and not (clone / "runs").exists()


def test_the_answer_follows_the_reports_it_reads(clone, monkeypatch, capsys):
    """Change the committed decision and the printed verdict changes with it: it is read, not written in."""
    path = clone / "stability-fast.json"
    report = json.loads(path.read_text())
    report["primary"].update(decision="undecided", ratio=1.3, ratio_ci=[1.05, 1.6])
    path.write_text(json.dumps(report))
    _, out, _, _ = _main_job(clone, monkeypatch, capsys, "--no-notebooks")
    assert "BCE is more stable (paper: max-min 1.04 against 2.36)? undecided" in out
    assert "ratio BCE/CE 1.300, 95% CI [1.050, 1.600]" in out
    path.write_text("{torn")
    _, out, _, _ = _main_job(clone, monkeypatch, capsys, "--no-notebooks")
    assert "The decided answer is not available:" in out and "stability-fast.json cannot be read" in out


def test_options_name_a_study_of_their_own_and_fresh_needs_a_new_folder(clone, monkeypatch, capsys):
    from nanogpt.__main__ import _is_main_job, main
    from nanogpt.cli import build_parser

    parse = build_parser().parse_args
    assert _is_main_job(parse(["study"])) and _is_main_job(parse(["study", "--out", "x", "--workers", "2"]))
    for options in (["--profile", "fast"], ["--seeds", "0-4"], ["--design", "paired"], ["--losses", "ce"],
                    ["--pretraining"]):
        assert not _is_main_job(parse(["study", *options])), options
    code, _, err, _ = _main_job(clone, monkeypatch, capsys, "--fresh")
    assert code == 2 and f"--fresh needs a new or empty results folder, and {clone} is not" in err
    assert main(["study", "--fresh", "--profile", "cpu"]) == 2
    assert "give no --profile, --seeds, --design or --losses" in capsys.readouterr().err
    assert main(["study", "--set", "learning_rate=1e-3", "--out", str(clone)]) == 2
    assert "would change the decided study's runs" in capsys.readouterr().err


def test_a_report_with_the_same_numbers_is_not_rewritten(tmp_path):
    from nanogpt.core.artifacts import write_report_json

    path = tmp_path / "report.json"
    report = {"ratio": 1.0222242197356077, "ci": [0.98655, 1.0586], "n": 100, "missing": float("nan"), "s": "x"}
    assert write_report_json(path, report)
    first = path.read_bytes()
    noisy = {**report, "ratio": report["ratio"] * (1 + 1e-14)}  # another processor's last bits
    assert not write_report_json(path, noisy) and path.read_bytes() == first
    assert write_report_json(path, {**report, "ratio": 1.0223}) and path.read_bytes() != first
    assert json.loads(path.read_text())["ratio"] == 1.0223


def test_a_report_is_strict_json_with_null_for_what_has_no_number(tmp_path):
    from nanogpt.core.artifacts import atomic_write_json, write_report_json

    def strict(text):  # Python's json accepts NaN; a strict reader (JavaScript, jq, pandas' ujson) does not
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} written"))

    report = {"sd": float("nan"), "rows": [{"se": np.float32("nan"), "up": float("inf")}, (1.5, -np.inf)],
              "mean": np.float64(89.5), "n": 3}
    for write in (atomic_write_json, write_report_json):
        write(tmp_path / f"{write.__name__}.json", report)
        assert strict((tmp_path / f"{write.__name__}.json").read_text()) == {
            "sd": None, "rows": [{"se": None, "up": None}, [1.5, None]], "mean": 89.5, "n": 3}


def test_a_figure_showing_the_same_is_not_rewritten(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nanogpt.study.figure_digest import save_figure, saved_digest

    x = np.random.default_rng(0).normal(size=300)

    def figure(values, title="lengths"):
        fig, ax = plt.subplots()
        sns.histplot(values, ax=ax)
        sns.kdeplot(values, ax=ax.twinx())
        ax.set_title(title)
        return fig

    path = tmp_path / "f.png"
    assert save_figure(figure(x), path, dpi=50)
    first = path.read_bytes()
    assert saved_digest(path) is not None
    assert not save_figure(figure(x * (1 + 1e-13)), path, dpi=50) and path.read_bytes() == first  # rounding only
    assert save_figure(figure(x, title="other"), path, dpi=50)  # a changed label is a change
    assert save_figure(figure(x + 0.05), path, dpi=50)  # so is changed data
    plt.close("all")


def test_archiving_the_same_predictions_leaves_the_archive_bytes_alone(tmp_path):
    from nanogpt.run.predictions import archive_val_predictions

    preds = {"a": pd.DataFrame({"label": [0, 1], "positive_probability": [0.2, 0.7]})}
    path = archive_val_predictions(tmp_path, "x", preds)
    first = path.read_bytes()
    archive_val_predictions(tmp_path, "x", preds)
    assert path.read_bytes() == first  # a zip written again would carry a new timestamp
    archive_val_predictions(tmp_path, "x", {"a": preds["a"].assign(positive_probability=[0.3, 0.7])})
    assert path.read_bytes() != first
