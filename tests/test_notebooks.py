"""The five study notebooks, executed by papermill as `make study` runs them (smoke profile, two seeds)."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import figures_tag

from nanogpt.study.runs import NOTEBOOKS, PRETRAINING_NOTEBOOK, NotebookFailed, run_notebooks

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = ["01_class_balance.png", "01_review_lengths.png", "01_truncation_coverage.png", "01_indicative_words.png",
           "02_ce_learning_curves.png", "02_ce_final_accuracy.png", "03_bce_learning_curves.png",
           "03_bce_final_accuracy.png", "04_accuracy_by_loss.png", "04_calibration.png"]


@pytest.mark.parametrize("name", NOTEBOOKS + (PRETRAINING_NOTEBOOK, "07_your_own_data"))
def test_committed_notebooks_are_clean(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks with outputs stripped"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert nb.metadata["kernelspec"]["language"] == "python"  # papermill needs it


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    r = subprocess.run([sys.executable, "-m", "nanogpt", "study", "--profile", "smoke", "--seeds", "0-1",
                        "--out", str(root / "results"), "--figures", str(root / "figures"),
                        "--reports", str(root / "reports"), "--quiet"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, r.stdout


@pytest.mark.slow
def test_study_writes_figures_results_and_reports(study):
    root, stdout = study
    for name in FIGURES:
        # figures of each profile in a folder of their own; the runs' figures under their population's
        path = root / "figures" / ("smoke" if name.startswith("01") else figures_tag("smoke")) / name
        assert path.is_file() and path.stat().st_size > 10_000, name
    for name in NOTEBOOKS:
        assert (root / "reports" / f"{name}.ipynb").is_file()
    runs = pd.read_csv(root / "results" / "runs.csv")
    assert len(runs) == 4 and sorted(runs["loss"]) == ["bce", "bce", "ce", "ce"] and set(runs["seed"]) == {0, 1}
    assert {"run_id", "status", "val_accuracy", "val_loss", "roc_auc", "ece", "config"} <= set(runs.columns)
    assert (runs["val_accuracy"] > 0.7).all()
    assert "paper_mean" in stdout and "Welch" in stdout and "executed notebooks" in stdout


@pytest.mark.slow
def test_smoke_profile_learns(study):
    """The CI profile is no toy: its BCE run of seed 0 (trained by the study above, the very config a user's
    `train --profile smoke --loss bce --seed 0` makes) learns well above chance (50%), and its curve rises."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.run.rundir import RunDir

    root, _ = study
    cfg = get_profile("smoke").make_config("bce", 0, out_dir=str(root / "results"))
    runs = pd.read_csv(root / "results" / "runs.csv").set_index("run_id")
    row = runs.loc[cfg.run_id()]  # the study trained exactly this config
    assert row["val_accuracy"] > 0.70 and row["roc_auc"] > 0.78, row
    history = pd.read_csv(RunDir(root / "results", cfg.run_id()).history)
    curve = history["val_accuracy"].dropna()  # validation passes; the other rows log the training loss
    assert len(curve) == 3 and curve.iloc[-1] > curve.iloc[0] - 0.02
    assert curve.iloc[-1] == pytest.approx(row["val_accuracy"])


@pytest.mark.slow
def test_notebook_statistics_match_the_package(study):
    from nanogpt.run.results import read_results
    from nanogpt.study.stats import study_report

    root, _ = study
    recorded = json.loads((root / "results" / f"comparison-{figures_tag('smoke')}.json").read_text())
    runs = read_results(root / "results" / "runs.csv", finished_only=True)
    expected = study_report(runs, n_boot=10000)
    population = f"{runs['device'].iloc[0]}/{runs['precision'].iloc[0]}"
    assert recorded.pop("profile") == "smoke" and recorded.pop("population") == population
    assert json.loads(json.dumps(expected)) == recorded


@pytest.mark.slow
def test_panel_classified_the_injected_review(study):
    root, _ = study
    nb = nbformat.read(root / "reports" / "05_classify_reviews.ipynb", as_version=4)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    printed = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    result = json.loads(printed)
    assert set(result) == {"ce", "bce"}
    assert all(r["label"] in (0, 1) and 0 <= r["positive_probability"] <= 1 for r in result.values())


@pytest.mark.slow
def test_failed_notebook_is_named_and_kept(tmp_path):
    with pytest.raises(NotebookFailed, match=r"notebook 01_data_exploration failed in cell \d+ \(ParameterError: "
                                             r"parameter profile='huge'.*executed copy is kept at"):
        run_notebooks("huge", [0], results_dir=tmp_path / "r", figures_dir=tmp_path / "f",
                      reports_dir=tmp_path / "reports", progress=False)
    assert (tmp_path / "reports" / "01_data_exploration.ipynb").is_file()


@pytest.mark.slow
def test_wrong_parameter_type_fails_in_the_check_cell(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="parameter seeds"):
        pm.execute_notebook(str(NOTEBOOK_DIR / "02_train_cross_entropy.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "smoke", "seeds": 3.5, "results_dir": str(tmp_path)},
                            kernel_name="python3", progress_bar=False)


@pytest.mark.slow
def test_notebook_04_tells_the_committed_powered_study(tmp_path):
    """Notebook 04 on the committed `fast` rows (every design): its figures, and the verdict it wrote equals
    the package's report on the same rows."""
    import shutil

    import papermill as pm

    from nanogpt.run.results import one_population, read_results
    from nanogpt.study.powered import powered_report
    from nanogpt.study.stability import plan_samples

    repo = NOTEBOOK_DIR.parent
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=repo, capture_output=True, text=True, check=True)
    (tmp_path / "results").mkdir()
    for name in tracked.stdout.split():
        shutil.copy(repo / name, tmp_path / "results" / Path(name).name)
    pm.execute_notebook(str(NOTEBOOK_DIR / "04_statistical_comparison.ipynb"), str(tmp_path / "04.ipynb"),
                        parameters={"profile": "fast", "results_dir": str(tmp_path / "results"),
                                    "figures_dir": str(tmp_path / "figures"), "n_boot": 2000},
                        kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOK_DIR))
    for name in ("04_powered_runs.png", "04_ci_by_n.png", "04_max_min.png", "04_variance_by_design.png",
                 "04_paired_runs.png"):
        assert (tmp_path / "figures" / "fast" / name).stat().st_size > 10_000, name
    written = json.loads((tmp_path / "results" / "powered-fast.json").read_text())
    runs = read_results(tmp_path / "results" / "runs.csv", finished_only=True)
    runs, _ = one_population(runs[runs["profile"] == "fast"], prefer=("cpu", "fp32"))
    planned, replication = plan_samples(runs, "fast")  # plan 1 keeps to its own seeds
    assert written["verdict"] == powered_report(planned, n_boot=2000)["verdict"]
    assert written["accuracy"]["n_ce"] >= 20 and written["resplit"] is not None
    assert written["profile"] == "fast" and written["population"] == "cpu/fp32"
    # plan 2: its report and figures, the decision and point estimates those of the committed report
    churn = json.loads((tmp_path / "results" / "stability-fast.json").read_text())
    committed = json.loads((repo / "results" / "stability-fast.json").read_text())
    assert churn["primary"]["decision"] == committed["primary"]["decision"] == "equivalent"
    for key in ("ratio", "churn_ce", "churn_bce", "between", "n_ce"):
        assert churn["primary"][key] == pytest.approx(committed["primary"][key]), key
    assert churn["primary"]["n_ce"] == len(replication) // 2 >= 5
    for name in ("04_churn.png", "04_churn_where.png", "04_seed_ensemble.png", "04_paper_observation.png"):
        assert (tmp_path / "figures" / "fast" / name).stat().st_size > 10_000, name


def test_pretraining_study_command_line_refuses_what_it_cannot_do(capsys):
    from nanogpt.__main__ import main

    for args, message in ((["--design", "paired"], "takes no --design"), (["--init", "gpt2"], "drop --init"),
                          (["--pretrain-profile", "lm-huge"], "lm-cpu"), (["--backbones", "2-1"], "backwards")):
        code = main(["study", "--pretraining", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err)


def test_a_notebooks_kernel_imports_the_package_that_runs_it(tmp_path):
    """A study run from a second checkout (a worktree frozen for a long study) executes its notebooks with that
    checkout's code: the kernel, a child process started in notebooks/, gets the running package's folder first on
    PYTHONPATH, rather than importing whatever `nanogpt` is installed (here: this checkout's)."""
    import shutil

    import nanogpt

    copy = tmp_path / "checkout"
    shutil.copytree(Path(nanogpt.__file__).parent, copy / "nanogpt", ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import nanogpt, os\nprint(nanogpt.__file__)")]
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "probe.ipynb")
    script = ("import os; os.environ['PYTHONPATH'] = '/elsewhere'\n"
              "from nanogpt.study.runs import execute_notebook\n"
              f"out = execute_notebook('probe', {{}}, {str(tmp_path / 'reports')!r}, "
              f"notebooks_dir={str(tmp_path / 'nb')!r}, progress=False)\n"
              "print(os.environ['PYTHONPATH'])")
    run = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "/elsewhere"  # the launcher's environment as it was
    printed = nbformat.read(tmp_path / "reports" / "probe.ipynb", as_version=4).cells[0].outputs[0]["text"]
    assert Path(printed.strip()).resolve() == (copy / "nanogpt" / "__init__.py").resolve()
