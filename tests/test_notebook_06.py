"""Notebook 06 (the pre-training study) executed at smoke size: in a file of its own, so that the suite's two
longest notebook runs (this one and the study fixture of test_notebooks.py) go to different xdist workers."""
import json

import pytest


@pytest.mark.slow
def test_pretraining_study_runs_notebook_06(tmp_path):
    """Notebook 06 as `study --pretraining` runs it, at smoke size: two backbones, scratch and pre-trained runs
    of both losses; its figures, and a summary equal to the package's report on the same rows."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.baseline import tfidf_baseline
    from nanogpt.study.pretrain_study import pretraining_report, stored_pretraining
    from nanogpt.study.runs import run_pretraining_notebook

    out = tmp_path / "results"
    run_pretraining_notebook("smoke", "lm-smoke", [0, 1], [0, 1], results_dir=out, figures_dir=tmp_path / "figures",
                             reports_dir=tmp_path / "reports", progress=False, probe_limit=300,
                             overrides={"max_steps": 40, "eval_interval": 20, "train_limit": 2000, "val_limit": 300})
    for name in ("06_pretraining_curves.png", "06_accuracy_by_start.png", "06_accuracy_per_compute.png",
                 "06_pretraining_budget.png", "06_short_inputs_and_length.png"):
        assert (tmp_path / "figures" / "smoke" / name).stat().st_size > 10_000, name
    runs, backbones = stored_pretraining(out, "smoke", "lm-smoke")
    assert len(backbones) == 2 and sorted(runs["start"].value_counts().to_dict().items()) == [
        ("pre-trained", 5), ("scratch", 4)]  # 2 seeds x 2 losses each, and CE seed 0 on the second backbone
    summary = json.loads((out / "pretraining-smoke.json").read_text())
    expected = pretraining_report(runs, backbones, tfidf_baseline(out_dir=out)["accuracy"])
    assert json.loads(json.dumps(expected, default=float))["arms"] == summary["arms"]
    assert summary["variance"]["n_backbones"] == 2 and len(summary["probe"]["model"]) == 5  # 4 GPTs and TF-IDF
    assert any(s.startswith("BCE - CE pre-trained") for s in summary["verdict"])
    # churn between the fine-tuning seeds of each arm (both seeds' predictions are in their folders)
    assert set(summary["churn"]) == {f"{s}/{loss}" for s in ("scratch", "pre-trained") for loss in ("ce", "bce")}
    assert all(c["n_runs"] == 2 and 0 <= c["ci_low"] <= c["churn"] <= c["ci_high"] <= 100
               for c in summary["churn"].values())
    assert summary["budget"]["tokens"][0] == 0 and len(summary["budget"]["accuracy"]) == 3  # scratch, 2 backbones
    # accuracy against positions: backbone 0's CE seed 0 at the profile's block (no run with fewer positions here)
    assert summary["positions"]["block_size"] == [get_profile("smoke").config.block_size]
    first = runs[(runs["backbone"] == backbones["backbone_id"].iloc[0]) & (runs["loss"] == "ce") & (runs["seed"] == 0)]
    assert summary["positions"]["accuracy"] == pytest.approx([100 * first["val_accuracy"].item()])
    # analysing only (a fresh clone's case): the same report from the stored rows, the probe from the summary
    again = run_pretraining_notebook("smoke", "lm-smoke", results_dir=out, figures_dir=tmp_path / "f2",
                                     reports_dir=tmp_path / "r2", progress=False, train=False, probe_limit=300)
    assert json.loads((out / "pretraining-smoke.json").read_text())["arms"] == summary["arms"] and again.is_file()
