"""The lever study (study/levers.py): arms trained from one backbone and scored on the development slice, paired
against `plain` by seed; the soup is one model of averaged weights, the ensemble the mean of probabilities."""
import math

import numpy as np
import pytest
import torch
from test_pretrain import smoke

from nanogpt.run import pretrain as P
from nanogpt.run.rundir import RunDir
from nanogpt.study import levers

TINY = dict(block_size=64, n_layer=1, n_head=2, n_embd=32, train_limit=512, val_limit=64, batch_size=16,
            max_steps=12, warmup_steps=3, eval_interval=12, learning_rate=2e-3, quiet=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("levers")
    backbone = P.pretrain(smoke(tmp / "pre"))
    out = tmp / "levers"
    levers.run_levers(backbone.path, ["plain", "at-0.01"], [0, 1], out, **TINY)
    return backbone, out


def test_arms_are_named_and_checked():
    assert levers.parse_arm("plain") == {}
    assert levers.parse_arm("vat-0.003") == {"adversarial": "vat", "adversarial_epsilon": 0.003}
    for bad in ("fgsm-0.1", "at", "at-0", "at-x"):
        with pytest.raises(ValueError, match="Unknown lever arm"):
            levers.parse_arm(bad)
    assert levers.arm_of({"adversarial": "at", "adversarial_epsilon": 0.01}) == "at-0.01"
    assert levers.arm_of({}) == "plain"  # rows recorded before the field existed


def test_lever_runs_are_scored_on_the_development_slice_and_paired_by_seed(study, monkeypatch):
    backbone, out = study
    runs = levers.lever_runs(out)
    assert sorted(zip(runs["arm"], runs["seed"])) == [("at-0.01", 0), ("at-0.01", 1), ("plain", 0), ("plain", 1)]
    assert (runs["n_dev"] == 52).all()  # 10% of the 512 training reviews (rounded up, stratified); trained on the rest
    assert (runs["init"] == f"lm:{backbone.backbone_id}").all()
    table = levers.lever_table(out, formed=False).set_index("arm")
    plain = runs[runs["arm"] == "plain"].set_index("seed")["dev_accuracy"]
    at = runs[runs["arm"] == "at-0.01"].set_index("seed")["dev_accuracy"]
    diff = at - plain
    assert table.loc["at-0.01", "minus_plain"] == pytest.approx(diff.mean())
    assert table.loc["at-0.01", "se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(2))
    assert table.loc["plain", "dev_accuracy"] == pytest.approx(plain.mean())
    assert math.isnan(table.loc["plain", "minus_plain"])
    # finished runs are found, not trained again
    import nanogpt.run.train as train_module

    def refuse(*a, **k):
        raise AssertionError("a finished lever run was trained again")

    monkeypatch.setattr(train_module, "train", refuse)
    found = levers.run_levers(backbone.path, ["plain", "at-0.01"], [0, 1], out, **TINY)
    assert sorted(found) == sorted(runs["run_id"])


def _dev_probs_of(run_dir):
    return levers._dev_probabilities([run_dir], "ensemble")


def test_soup_averages_weights_and_ensemble_averages_probabilities(study, tmp_path):
    _, out = study
    runs = levers.lever_runs(out)
    dirs = [RunDir(out, r).path for r in runs[runs["arm"] == "plain"].sort_values("seed")["run_id"]]
    labels, one = _dev_probs_of(dirs[0])
    _, two = _dev_probs_of(dirs[1])
    _, ensemble = levers._dev_probabilities(dirs, "ensemble")
    np.testing.assert_allclose(ensemble, (one + two) / 2, atol=1e-6)
    _, self_soup = levers._dev_probabilities([dirs[0], dirs[0]], "soup")
    np.testing.assert_allclose(self_soup, one, atol=1e-6)  # the average of a model with itself is that model
    _, soup = levers._dev_probabilities(dirs, "soup")
    assert not np.allclose(soup, one) and not np.allclose(soup, two) and not np.allclose(soup, ensemble)
    # the soup is the model whose every tensor is the mean of the two runs' tensors
    ckpt = torch.load(dirs[0] / "model.pt", weights_only=True)
    other = torch.load(dirs[1] / "model.pt", weights_only=True)["model_state"]
    averaged = tmp_path / "averaged"
    averaged.mkdir()
    torch.save({**ckpt, "model_state": {k: (v + other[k]) / 2 for k, v in ckpt["model_state"].items()}},
               averaged / "model.pt")
    np.testing.assert_allclose(_dev_probs_of(averaged)[1], soup, atol=1e-6)
    formed = {r["arm"]: r for r in levers.formed_arms(out)}
    assert formed["soup"]["single_model"] and not formed["ensemble"]["single_model"]
    assert formed["soup"]["dev_accuracy"] == pytest.approx(np.mean((soup > 0.5) == labels))
    assert formed["ensemble"]["dev_accuracy"] == pytest.approx(np.mean((ensemble > 0.5) == labels))
    with pytest.raises(ValueError, match="'soup' or 'ensemble'"):
        levers._dev_probabilities(dirs, "median")


def test_a_distill_arm_learns_from_the_ensemble_of_the_plain_runs(study, tmp_path):
    import shutil

    from nanogpt.run import distill

    backbone, fixture_out = study
    out = tmp_path / "levers"
    shutil.copytree(fixture_out, out)  # the plain runs of seeds 0 and 1, found finished there
    assert levers.parse_arm("distill-0.5") == {"distill_weight": 0.5}
    assert levers.parse_arm("distill-1-t2") == {"distill_weight": 1.0, "distill_temperature": 2.0}
    assert levers.arm_of({"teacher": "t.npz", "distill_weight": 1.0, "distill_temperature": 2.0}) == "distill-1-t2"
    for bad in ("distill-0", "distill-1.5", "distill", "distill-1-t0.5", "at-0.01-t2"):
        with pytest.raises(ValueError, match="Unknown lever arm"):
            levers.parse_arm(bad)
    (student,) = levers.run_levers(backbone.path, ["distill-0.5"], [0], out, teacher_seeds=(0, 1), **TINY)
    runs = levers.lever_runs(out)
    plain = runs[runs["arm"] == "plain"].sort_values("seed")["run_id"].tolist()
    path = levers.teacher_path(backbone.path, out, "ce", (0, 1), **TINY)
    probs, meta = distill.read_teacher(path)
    assert meta["members"] == plain and len(probs) == 512 - 52  # the training part: the dev slice is not taught
    each = [distill.read_teacher(distill.ensemble_teacher([RunDir(out, r).path], tmp_path / f"{r}.npz"))[0]
            for r in plain]
    np.testing.assert_allclose(probs, np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[1])  # two teachers that differ, so the mean is not either one
    row = runs.set_index("run_id").loc[student]
    assert row["arm"] == "distill-0.5" and row["seed"] == 0
    assert RunDir(out, student).read_meta()["config"]["teacher"] == str(path)
    table = levers.lever_table(out, formed=False).set_index("arm")
    paired = row["dev_accuracy"] - runs[(runs["arm"] == "plain") & (runs["seed"] == 0)]["dev_accuracy"].item()
    assert table.loc["distill-0.5", "minus_plain"] == pytest.approx(paired)


def test_levers_command_line(study, capsys, tmp_path):
    import json

    from nanogpt.__main__ import main

    backbone, out = study
    sets = [a for k, v in TINY.items() if k != "quiet" for a in ("--set", f"{k}={v}")]
    code = main(["levers", "--backbone", str(backbone.path), "--arms", "plain,at-0.01", "--seeds", "0-1",
                 "--out", str(out), "--quiet", *sets])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "levers.json").read_text())
    arms = [r["arm"] for r in report["rows"]]
    assert arms[:2] == ["plain", "at-0.01"] and set(arms[2:]) == {"soup", "ensemble"}
    plain = next(r for r in report["rows"] if r["arm"] == "plain")
    assert f"{100 * plain['dev_accuracy']:.2f}" in printed and "ensemble" in printed
    assert main(["levers", "--backbone", str(backbone.path), "--arms", "fgsm-1", "--out", str(tmp_path)]) == 2
    assert "Unknown lever arm" in capsys.readouterr().err
    assert main(["levers", "--backbone", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs.csv").exists()  # nothing trained on a bad command line


@pytest.mark.parametrize("folder", ["results/levers", "results/levers-2", "results/levers-dropout", "results/levers-deep", "results/levers-aux"])
def test_the_committed_lever_tables_follow_from_their_rows(folder):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / folder
    report = json.loads((root / "levers.json").read_text())
    if "against" in report:  # a backbone lever: its plain runs against the reference folder's, seed by seed
        kept = report["against"]
        again = levers.against_plain(root, root.parents[1] / kept["against"])
        assert (kept["seeds"], kept["runs"]) == (again["seeds"], again["runs"])
        for key in ("dev_accuracy", "reference_accuracy", "minus_reference", "se"):
            assert kept[key] == pytest.approx(again[key], abs=1e-12), key
    committed = {r["arm"]: r for r in report["rows"]}
    table = levers.lever_table(root, formed=False)  # the trained arms: the soup and ensemble need the weights
    assert len(table) >= (1 if "against" in report else 2)
    for row in table.to_dict(orient="records"):
        kept = committed[row["arm"]]
        assert (kept["runs"], kept["seeds"]) == (row["runs"], row["seeds"])
        for key in ("dev_accuracy", "minus_plain", "se"):
            number = float("nan") if kept[key] is None else kept[key]  # null: no number (e.g. plain minus plain)
            assert number == pytest.approx(row[key], nan_ok=True, abs=1e-12), (row["arm"], key)


def test_the_rebuilt_backbone_gave_the_committed_plain_runs_to_the_bit():
    """results/levers-2 trained its plain runs again from a backbone rebuilt from the same recipe (other file
    bytes: the file records its training minutes, so other run ids): every plain seed both folders hold (0-2) has
    the committed development accuracy."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results"
    first, again = (levers.lever_runs(root / f) for f in ("levers", "levers-2"))
    first, again = (r[r["arm"] == "plain"].set_index("seed")["dev_accuracy"] for r in (first, again))
    shared = again.index.intersection(first.index)
    assert list(shared) == [0, 1, 2]
    assert again[shared].to_dict() == first[shared].to_dict()


def test_a_backbone_lever_pairs_plain_runs_by_seed_across_folders(tmp_path, capsys):
    """`levers --against`: this folder's plain runs minus another folder's, seed by seed, over the seeds both hold."""
    import math
    from pathlib import Path

    import pandas as pd

    from nanogpt.__main__ import main

    committed = Path(__file__).resolve().parents[1] / "results" / "levers-2" / "runs.csv"
    rows = pd.read_csv(committed)
    (tmp_path / "a").mkdir()
    rows.to_csv(tmp_path / "a" / "runs.csv", index=False)
    reference = levers.lever_runs(tmp_path / "a")
    plain = reference[reference["arm"] == "plain"].set_index("seed")["dev_accuracy"]
    shifts = {0: 0.01, 1: 0.03, 2: -0.01, 3: 0.0}  # seed 4 only in the reference: left out of the pairs
    moved = rows.copy()
    is_plain = moved["run_id"].isin(reference.loc[reference["arm"] == "plain", "run_id"])
    for seed, shift in shifts.items():
        at = is_plain & (moved["seed"] == seed)
        moved.loc[at, "last_dev_accuracy"] = moved.loc[at, "last_dev_accuracy"] + shift
    moved = moved[~(is_plain & (moved["seed"] == 4))]
    (tmp_path / "b").mkdir()
    moved.to_csv(tmp_path / "b" / "runs.csv", index=False)

    row = levers.against_plain(tmp_path / "b", tmp_path / "a")
    diffs = list(shifts.values())
    mean = sum(diffs) / 4
    assert row["seeds"] == "0,1,2,3" and row["runs"] == 4
    assert row["minus_reference"] == pytest.approx(mean, abs=1e-12)
    assert row["se"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3 / 4), abs=1e-12)
    assert row["reference_accuracy"] == pytest.approx(plain[[0, 1, 2, 3]].mean(), abs=1e-12)
    assert "+0.75 points" in levers.format_against(row)
    (tmp_path / "empty").mkdir()
    pd.DataFrame(columns=rows.columns).to_csv(tmp_path / "empty" / "runs.csv", index=False)
    with pytest.raises(ValueError, match="no fine-tuning seed"):
        levers.against_plain(tmp_path / "b", tmp_path / "empty")
    fake = tmp_path / "backbone.pt"
    fake.write_bytes(b"x")
    assert main(["levers", "--backbone", str(fake), "--against", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "c")]) == 2
    assert "--against" in capsys.readouterr().err and not (tmp_path / "c").exists()
