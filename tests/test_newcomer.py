"""What a newcomer meets first: notebooks on a fresh clone, figures per profile, and honest time estimates."""

import io
import os
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from conftest import figures_tag, tiny_config  # noqa: E402


def test_predictions_archive_stands_in_for_run_folders(tmp_path, tiny_run):
    from nanogpt.run.predictions import archive_val_predictions, available_val_predictions, load_val_predictions
    from nanogpt.run.results import read_results, runs_csv

    results = tiny_run["ce"].run_dir.parent.parent
    clone = tmp_path / "clone"  # a fresh clone: runs.csv and the archive, no run folders
    runs = read_results(runs_csv(results), finished_only=True)
    found, missing = available_val_predictions(results, runs)
    assert not missing and len(found) == 2
    archive = archive_val_predictions(clone, "test", found)
    assert archive.name == "val-predictions-test.npz" and archive.stat().st_size < 10_000
    for rid, df in found.items():
        again = load_val_predictions(clone, rid)
        assert again["label"].tolist() == df["label"].tolist()
        assert (again["positive_probability"] - df["positive_probability"]).abs().max() < 1e-3  # float16
    nothing = tmp_path / "empty"
    assert available_val_predictions(nothing, runs) == ({}, list(runs["run_id"]))
    with pytest.raises(FileNotFoundError, match="no validation predictions"):
        load_val_predictions(nothing, runs["run_id"].iloc[0])


def test_learning_curves_say_which_runs_have_no_folder_here(tmp_path, tiny_run, capsys):
    """Rows of --keep none runs trained elsewhere have no history here: the curves show the runs that have one
    and say how many do not; with none at all, no figure is drawn and that is said."""
    import shutil

    from nanogpt.run.results import read_results, runs_csv
    from nanogpt.study.notebook import plot_learning_curves, setup

    results = tiny_run["ce"].run_dir.parent.parent
    clone = tmp_path / "clone"
    shutil.copytree(results, clone)
    runs = read_results(runs_csv(clone), finished_only=True).assign(arm=lambda r: r["loss"])
    shutil.rmtree(clone / "runs" / str(runs["run_id"].iloc[1]))
    nb = setup("smoke", results_dir=str(clone), figures_dir=str(tmp_path / "figures"))
    fig = plot_learning_curves(nb, runs, "ce", "curves.png")
    assert fig is not None and (tmp_path / "figures" / "smoke" / "curves.png").is_file()
    assert "1 of 2 run(s) have no learning curve here" in capsys.readouterr().out
    plt.close(fig)
    shutil.rmtree(clone / "runs")
    assert plot_learning_curves(nb, runs, "ce", "none.png") is None
    assert "2 of 2 run(s) have no learning curve" in capsys.readouterr().out
    assert not (tmp_path / "figures" / "smoke" / "none.png").exists()


def test_figures_of_each_profile_go_to_their_own_folder(tmp_path):
    from nanogpt.study.notebook import setup

    paths = []
    for profile in ("smoke", "cpu"):
        nb = setup(profile, figures_dir=str(tmp_path))
        fig, _ = plt.subplots()
        paths.append(nb.save(fig, "04_accuracy_by_loss.png"))
        plt.close(fig)
    assert paths == [tmp_path / "smoke" / "04_accuracy_by_loss.png", tmp_path / "cpu" / "04_accuracy_by_loss.png"]
    assert all(p.is_file() for p in paths)


def test_a_notebook_rerun_saves_the_same_figure_bytes(tmp_path):
    """seaborn jitters strip plots with numpy's global generator; setup() seeds it, so a rerun has no diff."""
    from nanogpt.study.notebook import setup

    data = pd.DataFrame({"loss": ["ce", "bce"] * 20, "accuracy": np.linspace(85, 89, 40)})
    saved = []
    for folder in ("a", "b"):
        nb = setup("cpu", figures_dir=str(tmp_path / folder))
        fig, ax = plt.subplots()
        sns.stripplot(data=data, x="loss", y="accuracy", jitter=0.2, ax=ax)
        saved.append(nb.save(fig, "strip.png").read_bytes())
        plt.close(fig)
    assert saved[0] == saved[1]
    np.random.seed(1)  # and the seeding is what makes them equal: another draw moves the points
    fig, ax = plt.subplots()
    sns.stripplot(data=data, x="loss", y="accuracy", jitter=0.2, ax=ax)
    fig.savefig(tmp_path / "other.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    assert (tmp_path / "other.png").read_bytes() != saved[0]


def test_indicative_words_are_the_same_in_every_process():
    """Notebook 01's word table (and figure) once changed between identical runs: words of equal log-odds came
    in set order, which each process's string hashing shuffles. Ties are now ordered by the word."""
    code = ("from nanogpt.study.explore import indicative_words as f\n"
            "texts = ['alpha beta gamma delta epsilon'] * 30 + ['zeta eta theta iota kappa'] * 30\n"
            "print(f(texts, [1] * 30 + [0] * 30, top=4, min_count=5).to_csv())")
    tables = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(2)}
    assert len(tables) == 1, tables
    words = pd.read_csv(io.StringIO(tables.pop()))["word"].tolist()
    assert words == ["alpha", "beta", "delta", "epsilon", "eta", "iota", "kappa", "theta"]


def test_bad_notebook_parameters_are_named(tmp_path):
    from nanogpt.study.notebook import setup
    from nanogpt.study.params import ParameterError

    with pytest.raises(ParameterError, match="parameter profile='huge'"):
        setup("huge")
    with pytest.raises(ParameterError, match="parameter overrides"):
        setup("smoke", overrides=["max_steps", 3])


def test_wall_time_estimate_is_measured_and_leaves_the_random_stream_alone(tmp_path):
    from nanogpt.study.estimate import describe_estimate, estimate_run_seconds

    cfg = tiny_config(tmp_path, max_steps=100, eval_interval=50)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    est = estimate_run_seconds(cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert 0 < est["step_seconds"] < 5 and est["run_seconds"] > 100 * est["step_seconds"]
    line = describe_estimate([cfg, cfg.replace(seed=1)])
    assert "for 2 run(s)" in line and "cpu" in line and describe_estimate([]) == "nothing to train"


def test_one_population_never_pools_precisions_and_prefers_this_machines():
    from nanogpt.run.results import one_population

    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(7)], "device": "cpu",
                         "precision": ["bf16"] * 4 + ["fp32"] * 3, "val_accuracy": 0.85})
    largest, note = one_population(runs)
    assert set(largest["precision"]) == {"bf16"} and "3 run(s) on cpu/fp32" in note
    mine, note = one_population(runs, prefer=("cpu", "fp32"))
    assert set(mine["precision"]) == {"fp32"} and len(mine) == 3 and "4 run(s) on cpu/bf16" in note
    same, note = one_population(runs[runs["precision"] == "bf16"], prefer=("cpu", "fp32"))
    assert len(same) == 4 and note == ""
    # this machine's population still being trained (one CE run): the complete one is analysed, and it says why
    runs = runs.assign(loss=["ce", "ce", "bce", "bce", "ce", "ce", "ce"])
    chosen, note = one_population(runs, prefer=("cpu", "fp32"))
    assert set(chosen["precision"]) == {"bf16"} and "fewer than 2 runs of each loss" in note
    assert "3 run(s) on cpu/fp32" in note
    # a population asked for by name is analysed whatever its size; one that has no runs is named as absent
    asked, note = one_population(runs, prefer=("cpu", "bf16"), choose=("cpu", "fp32"))
    assert set(asked["precision"]) == {"fp32"} and "4 run(s) on cpu/bf16" in note and "fewer" not in note
    with pytest.raises(ValueError, match=r"No runs on cuda/bf16 here.*cpu/bf16 \(4 runs\), cpu/fp32 \(3 runs\)"):
        one_population(runs, choose=("cuda", "bf16"))


def test_reports_name_the_one_population_they_come_from():
    from nanogpt.run.results import one_population, population_of

    runs = pd.DataFrame({"device": ["cpu", "cpu", "cuda"], "precision": ["fp32", "fp32", "bf16"]})
    assert population_of(one_population(runs)[0]) == "cpu/fp32"
    assert population_of(runs[runs["device"] == "cuda"]) == "cuda/bf16"
    with pytest.raises(ValueError, match=r"one device/precision population, got \['cpu/fp32', 'cuda/bf16'\]"):
        population_of(runs)
    with pytest.raises(ValueError, match="no runs"):
        population_of(runs.iloc[:0])


@pytest.mark.parametrize("value", ["cpu", "cpu/", "/bf16", "cpu/bf16/x", 16, ""])
def test_population_parameter_is_device_slash_precision(value):
    from nanogpt.study.params import ParameterError, check_population

    assert check_population(None) is None and check_population(" cuda / bf16") == ("cuda", "bf16")
    with pytest.raises(ParameterError, match="device/precision"):
        check_population(value)


def test_a_study_analyses_the_population_it_trained(tmp_path):
    """`study --precision fp32` (or --device) hands notebook 04 the population it trained, so that 04 never
    analyses another one (say the committed bf16 runs) in its place."""
    from nanogpt.study.runs import notebook_parameters

    for overrides, expected in (({"device": "cpu", "precision": "fp32"}, "cpu/fp32"),
                                ({"device": "cpu", "precision": "bf16"}, "cpu/bf16")):
        params = notebook_parameters("04_statistical_comparison", "cpu", None, "bundled", tmp_path, tmp_path,
                                     overrides)
        assert params["population"] == expected


def test_every_committed_population_gets_a_verdict_on_both_claims():
    """What notebook 04 ends with on a fresh clone, for each profile and each (device, precision) population
    of the committed runs.csv (which one a machine analyses depends on its processor): one line per claim,
    whether the runs suffice to judge or not. Stop 19's CI failed where the too-few branch named only one."""
    from nanogpt.core.resources import REPO_ROOT
    from nanogpt.run.results import fixed_design, one_population, read_results, runs_csv
    from nanogpt.study.analysis import load_plan
    from nanogpt.study.powered import MIN_RUNS_TO_JUDGE, powered_report, with_design
    from nanogpt.study.stats import conclusion, study_report

    runs = read_results(runs_csv(REPO_ROOT / "results"), finished_only=True)
    seen = []
    for profile in ("cpu", "fast"):
        mine = runs[runs["profile"] == profile]
        for device, precision in mine.groupby(["device", "precision"]).size().index:
            population, _ = one_population(mine, choose=(device, precision))
            fixed = fixed_design(population)
            per_loss = fixed.groupby("loss").size()
            if min(per_loss.get("ce", 0), per_loss.get("bce", 0)) >= MIN_RUNS_TO_JUDGE:  # notebook 04's choice
                lines = powered_report(with_design(population), load_plan(), n_boot=200)["verdict"]
            else:
                lines = conclusion(study_report(fixed, n_boot=200))
            claims = [line.split(":")[0] for line in lines]
            assert "Accuracy" in claims and "Stability" in claims, (profile, device, precision, lines)
            seen.append((profile, device, precision))
    assert ("fast", "cpu", "fp32") in seen and ("cpu", "cpu", "bf16") in seen, seen


def test_notebooks_train_and_name_figures_by_design(tmp_path, capsys):
    from nanogpt.study.notebook import plot_final_accuracy, setup, train_loss
    from nanogpt.study.params import ParameterError
    from nanogpt.study.runs import notebook_parameters

    with pytest.raises(ParameterError, match="parameter design='crossed'"):
        setup("smoke", design="crossed")
    tiny = dict(block_size=64, train_limit=256, val_limit=128, n_layer=1, n_head=2, n_embd=32, max_steps=3,
                warmup_steps=1, eval_interval=3)
    nb = setup("smoke", seeds=[0, 1], results_dir=str(tmp_path / "r"), figures_dir=str(tmp_path / "f"),
               overrides=tiny, design="paired")
    runs = train_loss(nb, "bce")  # the paired design's BCE notebook trains BCE and the third arm
    assert sorted(runs["arm"].unique()) == ["bce", "bce-headlr2-headwd0.5"] and len(runs) == 4
    capsys.readouterr()
    plt.close(plot_final_accuracy(nb, runs, "bce", "03_bce_final_accuracy.png"))
    said = capsys.readouterr().out
    each = r"mean \d+\.\d\d% over 2 seeds"  # counts of seeds, not floats ("over 2.0 seeds")
    assert re.search(rf"bce: {each}; bce-headlr2-headwd0.5: {each}", said), said
    fig, _ = plt.subplots()
    assert nb.save(fig, "03_bce_final_accuracy.png") == tmp_path / "f" / figures_tag("smoke") / "03_bce_final_accuracy-paired.png"
    plt.close(fig)
    nb.design = "resplit"
    from nanogpt.run.results import read_results, runs_csv

    resplit = train_loss(nb, "ce")
    rows = read_results(runs_csv(nb.results_dir)).set_index("run_id").loc[resplit["run_id"]]
    assert sorted(rows["split_seed"]) == [10_000, 10_001]  # each seed its own split
    params = notebook_parameters("02_train_cross_entropy", "smoke", [0], "bundled", tmp_path, tmp_path, {}, "resplit")
    assert params["design"] == "resplit"
    assert "design" not in notebook_parameters("04_statistical_comparison", "smoke", [0], "bundled", tmp_path,
                                               tmp_path, {}, "resplit")
