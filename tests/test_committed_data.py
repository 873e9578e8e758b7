"""The committed study is data nobody can regenerate bit for bit elsewhere: runs are identical on one processor
only, and `--keep none` runs live on only as their row and their archived predictions. A study on a fresh clone,
on any processor, must leave every committed row and archive entry it did not train in place."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_rows_and_run_folders_name_the_processor(tiny_run):
    import json

    from nanogpt.core.runtime import KERNEL_FLAGS, processor_of

    here = processor_of("cpu")
    assert here["processor"] and here["isa"].split("; torch ")[1]  # the model, and torch's kernel choice
    assert set(here["isa"].split(";")[0].split()) <= set(KERNEL_FLAGS) | {"x86_64", "aarch64", "arm64"}
    run = tiny_run["ce"]
    assert {k: run.row[k] for k in ("processor", "isa")} == here
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["environment"]["processor"] == here["processor"] and meta["environment"]["isa"] == here["isa"]


def test_the_archive_adds_and_updates_entries_and_never_drops_one(tmp_path):
    from nanogpt.run.predictions import archive_val_predictions, archived_run_ids, load_val_predictions

    def preds(p):
        return pd.DataFrame({"label": [0, 1, 1], "positive_probability": [p, 1 - p, 0.5]})

    archive_val_predictions(tmp_path, "x", {"a": preds(0.1), "b": preds(0.2)})
    archive_val_predictions(tmp_path, "x", {"b": preds(0.3), "c": preds(0.4)})  # b updated, a kept, c added
    path = tmp_path / "val-predictions-x.npz"
    assert archived_run_ids(path) == {"a", "b", "c"}
    assert load_val_predictions(tmp_path, "a")["positive_probability"][0] == pytest.approx(0.1, abs=1e-3)
    assert load_val_predictions(tmp_path, "b")["positive_probability"][0] == pytest.approx(0.3, abs=1e-3)
    from_archive = load_val_predictions(tmp_path, "c")  # what a folder's val_predictions.csv holds, in its types
    assert list(from_archive.columns) == ["row", "label", "positive_probability"]
    assert from_archive["row"].tolist() == [0, 1, 2] and from_archive["label"].tolist() == [0, 1, 1]
    assert from_archive["label"].dtype == "int64" and from_archive["positive_probability"].dtype == "float64"
    path.write_bytes(b"torn")  # an archive it cannot read is left alone, with a message, never replaced
    with pytest.raises(ValueError, match="not a readable predictions archive"):
        archive_val_predictions(tmp_path, "x", {"d": preds(0.5)})
    assert path.read_bytes() == b"torn"


def test_an_unreadable_archive_is_passed_over_when_reading_and_failed_runs_never_enter(tmp_path):
    from nanogpt.run.predictions import (
        archive_finished_run,
        archive_val_predictions,
        archived_run_ids,
        available_val_predictions,
        load_val_predictions,
        predictions_archive,
    )
    from nanogpt.run.rundir import RunDir

    good = pd.DataFrame({"label": [0, 1], "positive_probability": [0.25, 0.75]})
    archive_val_predictions(tmp_path, "b", {"kept": good})
    predictions_archive(tmp_path, "a").write_bytes(b"torn")  # read first (sorted), unreadable: passed over
    assert load_val_predictions(tmp_path, "kept")["positive_probability"].tolist() == [0.25, 0.75]
    with pytest.raises(FileNotFoundError, match="run gone: no validation predictions"):
        load_val_predictions(tmp_path, "gone")
    found, missing = available_val_predictions(tmp_path, pd.DataFrame({"run_id": ["kept", "gone"]}))
    assert list(found) == ["kept"] and missing == ["gone"]
    # a failed run (its folder may even hold predictions of an earlier attempt) is never archived
    run = RunDir(tmp_path, "failed-run")
    run.path.mkdir(parents=True)
    run.write_val_predictions(np.array([0, 1]), np.array([0.5, 0.5]))
    assert archive_finished_run(tmp_path, {"run_id": "failed-run", "profile": "b", "status": "failed"}) is None
    assert archived_run_ids(predictions_archive(tmp_path, "b")) == {"kept"}
    assert archive_finished_run(tmp_path, {"run_id": "failed-run", "profile": "b", "status": "ok"}) is not None
    assert archived_run_ids(predictions_archive(tmp_path, "b")) == {"kept", "failed-run"}  # the same row, ok


def test_a_run_lands_in_the_archive_as_it_finishes(tmp_path):
    """With --keep none the archive is the only lasting copy of a run's predictions: it is written per run, not
    left to notebook 04."""
    from nanogpt.run.predictions import archived_run_ids, predictions_archive
    from nanogpt.study.runs import run_configs

    configs = [tiny_config(tmp_path, max_steps=2, eval_interval=2, keep="none", seed=s) for s in (0, 1)]
    run_configs(configs, configs[0].out_dir, quiet=True)
    assert archived_run_ids(predictions_archive(configs[0].out_dir, "test")) == {c.run_id() for c in configs}


def _committed_copy(tmp_path) -> Path:
    """What `git clone` gives of the committed results: runs.csv and the archives, no run folders."""
    clone = tmp_path / "results"
    clone.mkdir()
    for path in [REPO / "results" / "runs.csv", *(REPO / "results").glob("val-predictions-*.npz")]:
        shutil.copy2(path, clone / path.name)
    return clone


def _snapshot(results: Path) -> dict:
    archives = {}
    for path in sorted(results.glob("val-predictions-*.npz")):
        with np.load(path, allow_pickle=False) as z:
            archives[path.name] = {name: z[name].copy() for name in z.files}
    return {"rows": pd.read_csv(results / "runs.csv").sort_values("run_id").reset_index(drop=True),
            "archives": archives}


def test_a_study_on_a_fresh_clone_keeps_every_committed_row_and_archive_entry(tmp_path, capsys, monkeypatch):
    """`make study` (the cpu profile, weights kept) on a clone: the committed runs of its seeds came from another
    processor (or one no row named), so they count as finished and are never trained again here (a newcomer's
    retrained runs once replaced the committed bf16 rows and emptied the archive of 30 fp32 runs). Then a run it
    does train (a new seed) lands beside them, and every committed row and archive entry is still there, equal."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.study import runs as study

    clone = _committed_copy(tmp_path)
    before = _snapshot(clone)
    cpu = get_profile("cpu")
    population = cpu.make_config().population()
    committed = before["rows"][(before["rows"]["profile"] == "cpu") & (before["rows"]["device"] == population[0])
                               & (before["rows"]["precision"] == population[1])]
    seeds = sorted(set(committed["seed"]))[:2]
    assert seeds, f"no committed cpu rows of {population} to protect"
    monkeypatch.setattr(study, "_train_one", lambda *a, **k: pytest.fail("trained a committed run again"))
    rows = study.run_study("cpu", seeds=seeds, out_dir=clone)
    printed = capsys.readouterr().out
    assert f"{2 * len(seeds)} already finished, 0 to train" in printed
    assert "trained on another processor than this one" in printed and "--out" in printed
    assert len(rows) == 2 * len(seeds)
    monkeypatch.undo()
    new = tiny_config(tmp_path, max_steps=2, eval_interval=2, keep="none", seed=123, out_dir=str(clone))
    study.run_configs([new], clone, quiet=True)
    after = _snapshot(clone)
    old_rows = after["rows"][after["rows"]["run_id"] != new.run_id()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old_rows[before["rows"].columns], before["rows"])
    for name, entries in before["archives"].items():
        assert set(entries) <= set(after["archives"][name]), name
        for key, array in entries.items():
            np.testing.assert_array_equal(after["archives"][name][key], array)
    assert f"p__{new.run_id()}" in after["archives"]["val-predictions-test.npz"]


def test_a_row_from_another_processor_is_never_replaced(tmp_path):
    """A finished row recorded on another processor (or on none recorded): a study counts it finished, `train`
    refuses before spending any time on it, and a write of the index refuses to replace it."""
    from nanogpt.run.results import ForeignRowError, read_results, runs_csv, upsert_result_row
    from nanogpt.run.train import train
    from nanogpt.study.runs import run_configs

    cfg = tiny_config(tmp_path, max_steps=2, eval_interval=2, keep="final")
    out = Path(cfg.out_dir)
    run_configs([cfg], out, quiet=True)
    row = read_results(runs_csv(out)).iloc[0].to_dict()
    elsewhere = row | {"processor": "Intel(R) Xeon(R) Platinum 8480+", "isa": "avx2 avx512f amx_tile; torch AVX512",
                       "val_accuracy": 0.5}
    shutil.rmtree(out / "runs")
    index = runs_csv(out)
    pd.DataFrame([elsewhere]).to_csv(index, index=False)
    with pytest.raises(ForeignRowError, match="Xeon.*never replaced.*--out"):
        train(cfg)
    assert not (out / "runs" / cfg.run_id() / "state.pt").exists()
    assert not (out / "runs" / cfg.run_id() / "meta.json").exists()  # refused before it trained: nothing written
    with pytest.raises(ForeignRowError):
        upsert_result_row(index, row)
    assert run_configs([cfg], out, quiet=True)["val_accuracy"].tolist() == [0.5]  # counted finished, kept
    legacy = {k: v for k, v in elsewhere.items() if k not in ("processor", "isa")}
    pd.DataFrame([legacy]).to_csv(index, index=False)  # a row from before processors were recorded
    with pytest.raises(ForeignRowError, match="unrecorded processor"):
        train(cfg)
    same = row | {"val_accuracy": 0.75}  # the same processor: the run is reproducible here, its row may update
    pd.DataFrame([row]).to_csv(index, index=False)
    upsert_result_row(index, same)
    assert read_results(index)["val_accuracy"].tolist() == [0.75]


def test_reports_and_figures_are_filed_by_population(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nanogpt.run.results import population_tag
    from nanogpt.study.notebook import setup

    assert population_tag("cpu", "cpu/fp32") == "cpu" and population_tag("cpu", None) == "cpu"
    assert population_tag("cpu", "cpu/bf16") == "cpu-bf16"
    assert population_tag("paper", "cuda/bf16") == "paper-cuda-bf16"
    nb = setup("cpu", figures_dir=str(tmp_path))
    nb.population = "cpu/bf16"
    fig, _ = plt.subplots()
    assert nb.save(fig, "x.png") == tmp_path / "cpu-bf16" / "x.png"
    plt.close(fig)


def test_the_archive_keeps_its_bytes_when_nothing_is_new_and_stores_compact_types(tmp_path):
    import os

    from nanogpt.run.predictions import archive_finished_run, archive_val_predictions, predictions_archive
    from nanogpt.run.rundir import RunDir

    preds = pd.DataFrame({"label": [0, 1], "positive_probability": [0.25, 0.75]})
    path = archive_val_predictions(tmp_path, "p", {"r": preds})
    os.utime(path, (1_000_000, 1_000_000))
    before = path.read_bytes()
    archive_val_predictions(tmp_path, "p", {"r": preds})  # the same entry again: the file is not rewritten
    assert path.read_bytes() == before and path.stat().st_mtime == 1_000_000
    with np.load(path, allow_pickle=False) as z:
        assert z["p__r"].dtype == np.float16 and z["y__r"].dtype == np.int8
    # a row recorded before rows had a status is a finished run: archived
    run = RunDir(tmp_path, "old-row")
    run.path.mkdir(parents=True)
    run.write_val_predictions(np.array([1, 0]), np.array([0.9, 0.1]))
    assert archive_finished_run(tmp_path, {"run_id": "old-row", "profile": "p"}) == predictions_archive(tmp_path, "p")
    assert archive_finished_run(tmp_path, {"run_id": "no-folder", "profile": "p"}) is None
