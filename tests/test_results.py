"""The readers of the results index (run/results.py) on hand-built rows: which runs make a population, the fixed
design, the tag a population's reports go under, learning curves and the checkpoints a panel offers."""
import re

import pandas as pd
import pytest

from nanogpt.run import results as R
from nanogpt.run.rundir import RunDir


def _runs(spec):
    """spec: (device, precision, loss, n) groups -> rows with distinct run ids and seeds."""
    rows = []
    for device, precision, loss, n in spec:
        for i in range(n):
            rows.append({"run_id": f"{device}-{precision}-{loss}-{i}", "device": device, "precision": precision,
                         "loss": loss, "seed": i, "val_accuracy": 0.8 + i / 100})
    return pd.DataFrame(rows)


def test_one_population_alone_is_taken_without_a_note():
    runs = _runs([("cpu", "fp32", "ce", 3), ("cpu", "fp32", "bce", 3)])
    chosen, note = R.one_population(runs)
    assert len(chosen) == 6 and note == ""


def test_the_largest_comparable_population_is_taken_and_the_rest_named():
    runs = _runs([("cpu", "fp32", "ce", 3), ("cpu", "fp32", "bce", 3),
                  ("cpu", "bf16", "ce", 5), ("cpu", "bf16", "bce", 1),  # larger, but one BCE run: not comparable
                  ("cuda", "bf16", "ce", 2), ("cuda", "bf16", "bce", 2)])
    chosen, note = R.one_population(runs)
    assert set(zip(chosen["device"], chosen["precision"])) == {("cpu", "fp32")} and len(chosen) == 6
    assert list(chosen.index) == list(range(6))
    assert note == ("Analysed: the 6 runs on cpu/fp32; left out, as a separate population: 6 run(s) on cpu/bf16, "
                    "4 run(s) on cuda/bf16.")
    # with min_per_loss=1 the larger bf16 population is comparable, and it is taken
    chosen, note = R.one_population(runs, min_per_loss=1)
    assert set(chosen["precision"]) == {"bf16"} and set(chosen["device"]) == {"cpu"} and len(chosen) == 6
    assert note.startswith("Analysed: the 6 runs on cpu/bf16;")


def test_this_machines_population_is_preferred_once_it_can_compare():
    runs = _runs([("cpu", "fp32", "ce", 4), ("cpu", "fp32", "bce", 4),
                  ("cpu", "bf16", "ce", 2), ("cpu", "bf16", "bce", 2)])
    chosen, note = R.one_population(runs, prefer=("cpu", "bf16"))
    assert set(chosen["precision"]) == {"bf16"} and len(chosen) == 4
    assert "left out, as a separate population: 8 run(s) on cpu/fp32." in note
    assert "fewer than" not in note
    # too few yet: the larger population, and the note says why this machine's own was passed over
    chosen, note = R.one_population(runs, prefer=("cpu", "bf16"), min_per_loss=3)
    assert set(chosen["precision"]) == {"fp32"}
    assert note.endswith("This machine's own population (cpu/bf16) has fewer than 3 runs of each loss yet.")


def test_a_chosen_population_is_taken_whatever_its_size_or_named_when_absent():
    runs = _runs([("cpu", "fp32", "ce", 4), ("cpu", "fp32", "bce", 4), ("cpu", "bf16", "ce", 1)])
    chosen, note = R.one_population(runs, choose=("cpu", "bf16"))
    assert len(chosen) == 1 and chosen["precision"].iloc[0] == "bf16"
    assert "left out, as a separate population: 8 run(s) on cpu/fp32." in note and "fewer than" not in note
    with pytest.raises(ValueError, match=r"No runs on cuda/bf16 here; the populations there are: "
                                         r"cpu/bf16 \(1 runs\), cpu/fp32 \(8 runs\)\."):
        R.one_population(runs, choose=("cuda", "bf16"))


def test_with_no_loss_column_every_population_can_compare():
    runs = _runs([("cpu", "fp32", "ce", 1), ("cpu", "bf16", "ce", 3)]).drop(columns="loss")
    chosen, _ = R.one_population(runs)
    assert set(chosen["precision"]) == {"bf16"}  # the largest: nothing to be comparable about


def test_population_of_names_one_population_or_refuses():
    runs = _runs([("cpu", "fp32", "ce", 2), ("cpu", "fp32", "bce", 2)])
    assert R.population_of(runs) == "cpu/fp32"
    with pytest.raises(ValueError, match=r"one device/precision population, got \['cpu/bf16', 'cpu/fp32'\]"):
        R.population_of(_runs([("cpu", "fp32", "ce", 1), ("cpu", "bf16", "ce", 1)]))
    with pytest.raises(ValueError, match="got no runs"):
        R.population_of(runs.iloc[:0])


@pytest.mark.parametrize("population, tag", [(None, "fast"), ("", "fast"), ("cpu/fp32", "fast"),
                                             ("cpu/bf16", "fast-bf16"), ("cuda/bf16", "fast-cuda-bf16"),
                                             ("cuda/fp32", "fast-cuda")])
def test_population_tag(population, tag):
    assert R.population_tag("fast", population) == tag


def test_fixed_design_keeps_the_standard_arms_on_the_fixed_split():
    runs = pd.DataFrame({"run_id": list("abcdef"), "loss": ["ce", "bce", "ce", "bce", "ce", "bce"],
                         "arm": ["ce", "bce", "ce-paired", None, "ce", "bce-head2x"],
                         "split_seed": [1337, 1337, 1337, 1337, 7, 1337]})
    assert list(R.fixed_design(runs)["run_id"]) == ["a", "b", "d"]  # no arm recorded: the loss is the arm
    assert list(R.fixed_design(runs, split_seed=7)["run_id"]) == ["e"]
    assert list(R.fixed_design(runs.drop(columns=["arm", "split_seed"]))["run_id"]) == list("abcdef")
    assert R.fixed_design(runs.iloc[:0]).empty


def test_finished_drops_failed_runs_and_missing_scores():
    runs = pd.DataFrame({"run_id": list("abcd"), "status": ["ok", "failed", None, "ok"],
                         "val_accuracy": [0.8, 0.7, 0.9, None]})
    assert list(R.finished(runs)["run_id"]) == ["a", "c"]
    assert list(R.finished(runs.drop(columns="status"))["run_id"]) == ["a", "b", "c"]


def _row(run_id, acc, **more):
    """A finished CE row of the index, as a run folder's meta.json also holds it."""
    return {"run_id": run_id, "status": "ok", "loss": "ce", "seed": 0, "val_accuracy": acc, **more}


def _history(out, run_id, steps):
    run = RunDir(out, run_id)
    run.path.mkdir(parents=True)
    pd.DataFrame({"step": steps, "train_loss": [0.5] * len(steps)}).to_csv(run.history, index=False)


def test_load_histories_labels_each_curve_with_its_run(tmp_path):
    _history(tmp_path, "r1", [10, 20])
    _history(tmp_path, "r2", [10])
    runs = pd.DataFrame({"run_id": ["r1", "r2", "r3"], "loss": ["ce", "bce", "ce"], "arm": ["ce-paired", None, "ce"],
                         "seed": [4, 5, 6]})
    curves = R.load_histories(tmp_path, runs)
    assert list(curves["run_id"]) == ["r1", "r1", "r2"]  # r3 has no history: left out, not an error
    assert list(curves["arm"]) == ["ce-paired", "ce-paired", "bce"] and list(curves["seed"]) == [4, 4, 5]
    assert list(curves["loss"]) == ["ce", "ce", "bce"] and list(curves["step"]) == [10, 20, 10]
    assert R.load_histories(tmp_path, runs.iloc[2:]).empty


def test_study_checkpoints_offer_runs_with_weights_best_first(tmp_path):
    rows = [{"run_id": f"r{i}", "status": status, "loss": loss, "seed": i, "val_accuracy": acc, "profile": prof}
            for i, (status, loss, acc, prof) in enumerate([("ok", "ce", 0.81, "cpu"), ("ok", "ce", 0.86, "cpu"),
                                                          ("ok", "bce", 0.84, "cpu"), ("failed", "bce", None, "cpu"),
                                                          ("ok", "ce", 0.9, "fast"), ("ok", "bce", 0.8, "cpu")])]
    pd.DataFrame(rows).to_csv(R.runs_csv(tmp_path), index=False)
    for i in (0, 1, 2, 3, 4):  # r5 kept no weights
        RunDir(tmp_path, f"r{i}").path.mkdir(parents=True)
        RunDir(tmp_path, f"r{i}").model.write_bytes(b"w")
    offered = R.study_checkpoints(tmp_path)
    assert list(offered) == ["ce", "bce"]  # the loss with the best run first: the panel's first dropdown
    assert [label for label, _ in offered["ce"]] == ["seed 4: 90.00% val", "seed 1: 86.00% val", "seed 0: 81.00% val"]
    assert offered["ce"][0][1] == str(RunDir(tmp_path, "r4").model)
    assert [label for label, _ in offered["bce"]] == ["seed 2: 84.00% val"]
    cpu = R.study_checkpoints(tmp_path, profile="cpu")
    assert [label for label, _ in cpu["ce"]] == ["seed 1: 86.00% val", "seed 0: 81.00% val"]
    assert R.study_checkpoints(tmp_path, profile="paper") == {}
    assert R.study_checkpoints(tmp_path / "nothing") == {}


def test_a_population_without_one_of_the_losses_cannot_compare_even_at_one_run_per_loss():
    runs = _runs([("cpu", "bf16", "ce", 5), ("cpu", "fp32", "ce", 1), ("cpu", "fp32", "bce", 1)])
    chosen, note = R.one_population(runs, min_per_loss=1)  # bf16 is larger but has no BCE run at all
    assert set(chosen["precision"]) == {"fp32"} and len(chosen) == 2
    assert note.endswith("left out, as a separate population: 5 run(s) on cpu/bf16.")


def test_sync_adds_the_rows_of_folders_the_index_lacks_and_keeps_the_others(tmp_path):
    """A process killed between the folder's meta.json and the index write: the run joins the index, and the rows
    already there (including runs whose weights and folders were never kept) stay."""
    def row(run_id, acc):
        return _row(run_id, acc, device="cpu", precision="fp32")

    R.upsert_result_row(R.runs_csv(tmp_path), row("test-ce-seed0-aaaaaaaa", 0.8))  # indexed, no folder
    RunDir(tmp_path, "test-ce-seed1-bbbbbbbb").write_meta(row("test-ce-seed1-bbbbbbbb", 0.9))  # folder only
    merged = R.sync_index(tmp_path, verbose=False)
    assert sorted(merged["run_id"]) == ["test-ce-seed0-aaaaaaaa", "test-ce-seed1-bbbbbbbb"]
    assert sorted(R.read_results(R.runs_csv(tmp_path))["run_id"]) == sorted(merged["run_id"])


def test_a_failed_row_has_every_column_of_a_finished_one_and_no_weights(tmp_path):
    import json
    from dataclasses import asdict

    from conftest import tiny_config

    cfg = tiny_config(tmp_path)
    failed = R.result_row(cfg, "test-ce-seed0-cccccccc", 512, 256, "cpu", "fp32", "failed", error="loss became nan")
    ok = R.result_row(cfg, "test-ce-seed0-cccccccc", 512, 256, "cpu", "fp32", "ok", val_accuracy=0.8,
                      model_sha256="ab" * 32)
    assert list(failed) == list(ok)
    assert failed["model_sha256"] == "" and pd.isna(failed["val_accuracy"]) and pd.isna(failed["val_loss"])
    assert failed["config"] == ok["config"] == json.dumps(asdict(cfg), sort_keys=True)  # canonical: keys sorted


# ------------------------------------------------------------ killers of mutants that survived the full run

def test_rows_without_a_recorded_precision_are_a_population_of_their_own():
    runs = _runs([("cpu", "fp32", "ce", 2), ("cpu", "fp32", "bce", 2), ("cpu", "x", "ce", 3), ("cpu", "x", "bce", 3)])
    runs.loc[runs["precision"] == "x", "precision"] = None
    chosen, note = R.one_population(runs)
    assert len(chosen) == 6 and chosen["precision"].isna().all()  # the largest: its rows, not none of them
    assert list(chosen.columns) == list(runs.columns) and list(chosen.index) == list(range(6))
    assert note == ("Analysed: the 6 runs on cpu/unrecorded; left out, as a separate population: "
                    "4 run(s) on cpu/fp32.")


def test_an_index_that_records_the_device_only_is_split_by_device():
    runs = _runs([("cuda", "-", "ce", 2), ("cuda", "-", "bce", 2), ("cpu", "-", "ce", 1)]).drop(columns="precision")
    chosen, note = R.one_population(runs)
    assert set(chosen["device"]) == {"cuda"} and len(chosen) == 4
    assert note == "Analysed: the 4 runs on cuda; left out, as a separate population: 1 run(s) on cpu."
    with pytest.raises(ValueError, match=r"No runs on cuda/bf16 here; the populations there are: none\."):
        R.one_population(runs, choose=("cuda", "bf16"))  # a population is a device and a precision


def test_when_no_population_can_compare_the_largest_is_taken():
    runs = _runs([("cpu", "fp32", "ce", 2), ("cpu", "bf16", "ce", 3), ("cuda", "bf16", "bce", 1)])
    chosen, note = R.one_population(runs)
    assert set(chosen["precision"]) == {"bf16"} and set(chosen["device"]) == {"cpu"} and len(chosen) == 3
    assert note == ("Analysed: the 3 runs on cpu/bf16; left out, as a separate population: 2 run(s) on cpu/fp32, "
                    "1 run(s) on cuda/bf16.")


def test_no_runs_are_no_population_and_no_note():
    empty = _runs([("cpu", "fp32", "ce", 1)]).iloc[:0]
    chosen, note = R.one_population(empty, prefer=("cpu", "fp32"))
    assert chosen.empty and note == ""
    with pytest.raises(ValueError, match=r"the populations there are: none\.$"):
        R.one_population(empty, choose=("cpu", "fp32"))


def test_without_a_loss_column_this_machines_population_is_preferred():
    runs = _runs([("cpu", "fp32", "ce", 1), ("cpu", "bf16", "ce", 3)]).drop(columns="loss")
    chosen, note = R.one_population(runs, prefer=("cpu", "fp32"))
    assert set(chosen["precision"]) == {"fp32"} and len(chosen) == 1
    assert note == "Analysed: the 1 runs on cpu/fp32; left out, as a separate population: 3 run(s) on cpu/bf16."


def test_the_note_says_both_what_was_analysed_and_why_this_machines_own_was_passed_over():
    runs = _runs([("cpu", "fp32", "ce", 4), ("cpu", "fp32", "bce", 4), ("cpu", "bf16", "ce", 2),
                  ("cpu", "bf16", "bce", 2)])
    _, note = R.one_population(runs, prefer=("cpu", "bf16"), min_per_loss=3)
    assert note == ("Analysed: the 8 runs on cpu/fp32; left out, as a separate population: 4 run(s) on cpu/bf16. "
                    "This machine's own population (cpu/bf16) has fewer than 3 runs of each loss yet.")


def test_readers_keep_the_columns_and_number_the_rows_afresh(tmp_path):
    runs = pd.DataFrame({"run_id": list("abc"), "loss": ["ce", "bce", "ce"], "arm": ["ce", "bce", "ce-paired"]})
    kept = R.fixed_design(runs)
    assert list(kept.columns) == list(runs.columns) and list(kept.index) == [0, 1]
    _history(tmp_path, "r1", [10, 20])
    _history(tmp_path, "r2", [10, 20, 30])
    curves = R.load_histories(tmp_path, pd.DataFrame({"run_id": ["r1", "r2"], "loss": ["ce", "bce"], "seed": [0, 1]}))
    assert list(curves.index) == list(range(5)) and "index" not in curves.columns


def test_population_of_needs_both_columns():
    with pytest.raises(ValueError, match="got no runs"):
        R.population_of(pd.DataFrame({"precision": ["fp32"]}))
    with pytest.raises(ValueError, match="got no runs"):
        R.population_of(pd.DataFrame({"device": ["cpu"]}))


def test_a_row_from_before_the_processor_was_recorded_has_an_empty_key_and_says_so():
    assert R.processor_key({"processor": float("nan"), "isa": None}) == ("", "")
    assert R.processor_key({}) == ("", "")
    assert R.processor_key({"processor": "AMD EPYC", "isa": "avx2"}) == ("AMD EPYC", "avx2")
    assert R.describe_processor(("", "")) == "an unrecorded processor (rows from before 2026-12)"
    assert R.describe_processor(("AMD EPYC", "avx2")) == "AMD EPYC [avx2]"


def test_a_torn_index_is_rebuilt_and_said_so_by_default(tmp_path, capsys):
    RunDir(tmp_path, "test-ce-seed1-bbbbbbbb").write_meta(_row("test-ce-seed1-bbbbbbbb", 0.9, seed=1))
    R.runs_csv(tmp_path).write_bytes(b"\xff\xfe not a csv")
    rebuilt = R.sync_index(tmp_path)
    assert list(rebuilt["run_id"]) == ["test-ce-seed1-bbbbbbbb"]
    out = capsys.readouterr().out
    assert f"; rebuilt it from 1 run folder(s) in {tmp_path / 'runs'}. Rows of runs without a folder there could " \
           "not be recovered." in out


def test_study_checkpoints_read_the_results_folder_by_default(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame([{"run_id": "r0", "status": "ok", "loss": "ce", "seed": 0, "val_accuracy": 0.8,
                   "profile": "cpu"}]).to_csv(R.runs_csv(results), index=False)
    RunDir(results, "r0").path.mkdir(parents=True)
    RunDir(results, "r0").model.write_bytes(b"w")
    monkeypatch.chdir(tmp_path)
    assert [label for label, _ in R.study_checkpoints()["ce"]] == ["seed 0: 80.00% val"]


def _write_index(tmp_path, frame):
    path = R.runs_csv(tmp_path)
    frame.to_csv(path, index=False)
    return path


def test_an_index_without_run_ids_is_refused_with_what_it_lacks(tmp_path):
    path = _write_index(tmp_path, pd.DataFrame({"loss": ["ce"], "val_accuracy": [0.8]}))
    with pytest.raises(R.ResultsIndexError, match=rf"^{path} lacks column\(s\) \['run_id'\]: it is torn or not a "
                                                  r"results index\.$"):
        R.read_results(path)


def test_torn_rows_are_named_by_their_numbers(tmp_path):
    good = {"run_id": "r", "status": "ok", "config": "{}", "val_accuracy": 0.8}
    rows = [good, {**good, "config": "[1]"}, {**good, "status": "done"}, good, {**good, "config": "{torn"},
            {**good, "status": None}]  # a list is JSON but not a config; an empty status is a row from before it
    path = _write_index(tmp_path, pd.DataFrame(rows))
    with pytest.raises(R.ResultsIndexError, match=rf"^{path}: row\(s\) \[1, 2, 4\] are torn \(no run id, a config "
                                                  r"that is not JSON, or an unknown status\)\.$"):
        R.read_results(path)
    many = _write_index(tmp_path, pd.DataFrame([{**good, "status": "?"}] * 12))
    with pytest.raises(R.ResultsIndexError, match=r"row\(s\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] are torn"):
        R.read_results(many)  # the first ten
    statusless = _write_index(tmp_path, pd.DataFrame([{"run_id": "r", "val_accuracy": 0.8}]))
    assert list(R.read_results(statusless)["run_id"]) == ["r"]


def test_finished_rows_are_numbered_afresh():
    runs = pd.DataFrame({"run_id": list("abc"), "status": ["failed", "ok", "ok"], "val_accuracy": [None, 0.8, 0.9]})
    kept = R.finished(runs)
    assert list(kept["run_id"]) == ["b", "c"] and list(kept.index) == [0, 1]
    assert list(kept.columns) == list(runs.columns)


def test_a_result_row_names_its_arm(tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path, loss="bce")
    row = R.result_row(cfg, "test-bce-seed0-dddddddd", 512, 256, "cpu", "fp32", "ok", val_accuracy=0.8)
    assert row["arm"] == cfg.arm() == "bce" and row["loss"] == "bce" and row["run_id"] == "test-bce-seed0-dddddddd"


def test_sync_creates_a_missing_index_from_the_folders_and_says_so(tmp_path, capsys):
    for i, rid in enumerate(["test-ce-seed0-aaaaaaaa", "test-ce-seed1-bbbbbbbb"]):
        RunDir(tmp_path, rid).write_meta(_row(rid, 0.8 + i / 10))
    merged = R.sync_index(tmp_path)
    assert f"{R.runs_csv(tmp_path)}: added 2 run(s) found in their folders but missing from the index" in \
        capsys.readouterr().out
    assert sorted(merged["run_id"]) == ["test-ce-seed0-aaaaaaaa", "test-ce-seed1-bbbbbbbb"]
    assert list(merged.index) == [0, 1] and "index" not in merged.columns
    RunDir(tmp_path, "test-bce-seed2-cccccccc").write_meta(_row("test-bce-seed2-cccccccc", 0.7))  # sorts first
    merged = R.sync_index(tmp_path, verbose=False)  # an index there: the new folder's row is added after its rows
    assert list(merged.index) == [0, 1, 2] and merged["run_id"].iloc[2] == "test-bce-seed2-cccccccc"
    assert list(R.read_results(R.runs_csv(tmp_path))["run_id"]) == list(merged["run_id"])


def test_a_row_has_the_indexs_columns_in_order_with_its_numbers_empty_until_given(tmp_path):
    import math

    from conftest import tiny_config

    cfg = tiny_config(tmp_path)
    row = R.result_row(cfg, "test-ce-seed0-cccccccc", 512, 256, "cpu", "fp32", "failed", error="loss became nan")
    assert list(row) == ["run_id", "status", "loss", "arm", "seed", "profile", "source", "split_seed", "n_train",
                         "n_val", "val_accuracy", "val_loss", "roc_auc", "ece", "f1", "steps", "train_seconds",
                         "tokens_per_second", "device", "precision", "torch_version", "config", "error", "data", "keep",
                         "model_sha256", "init", "backbone_sha256", "processor", "isa"]
    numbers = ("val_accuracy", "val_loss", "roc_auc", "ece", "f1", "train_seconds", "tokens_per_second")
    assert all(math.isnan(row[k]) for k in numbers) and row["steps"] == cfg.max_steps == 12
    assert row["error"] == "loss became nan" and row["init"] == "scratch" and row["backbone_sha256"] == ""


def test_an_upsert_into_a_torn_index_rebuilds_it_from_the_folders_first(tmp_path):
    RunDir(tmp_path, "test-ce-seed0-aaaaaaaa").write_meta(_row("test-ce-seed0-aaaaaaaa", 0.8))
    R.runs_csv(tmp_path).write_bytes(b"\xff\xfe not a csv")
    R.upsert_result_row(R.runs_csv(tmp_path), _row("test-ce-seed1-bbbbbbbb", 0.9))
    index = R.read_results(R.runs_csv(tmp_path))
    assert list(index["run_id"]) == ["test-ce-seed0-aaaaaaaa", "test-ce-seed1-bbbbbbbb"]
    assert (tmp_path / "runs.csv.lock").is_file()  # the lock sits beside the index it guards


def test_sync_locks_the_index_it_syncs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    RunDir(tmp_path / "out", "test-ce-seed0-aaaaaaaa").write_meta(_row("test-ce-seed0-aaaaaaaa", 0.8))
    R.sync_index(tmp_path / "out", verbose=False)
    assert (tmp_path / "out" / "runs.csv.lock").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_finished_row_of_another_processor_is_never_replaced_and_the_error_names_both(tmp_path):
    path = R.runs_csv(tmp_path)
    first = {"run_id": "r1", "status": "ok", "val_accuracy": 0.8, "processor": "Xeon", "isa": "avx512f"}
    R.upsert_result_row(path, first)
    with pytest.raises(R.ForeignRowError, match=rf"^{path}: run r1 is already finished there, trained on Xeon "
                                                r"\[avx512f\]; here it runs on EPYC \[avx2\], where its numbers differ"):
        R.upsert_result_row(path, {**first, "val_accuracy": 0.9, "processor": "EPYC", "isa": "avx2"})
    R.upsert_result_row(path, {"run_id": "r1", "status": "ok", "val_accuracy": 0.7})  # a row that names none
    assert R.read_results(path)["val_accuracy"].tolist() == [0.7]


@pytest.mark.parametrize("status, refused", [("failed", False), ("ok", True), (None, True)])
def test_only_a_finished_row_of_another_processor_is_kept_from_replacement(tmp_path, status, refused):
    path = R.runs_csv(tmp_path)
    prior = {"run_id": "r1", "status": status, "val_accuracy": 0.8, "processor": "Xeon", "isa": "avx512f"}
    R.upsert_result_row(path, prior)  # an empty status: a row from before statuses, finished if it has a score
    here = {**prior, "status": "ok", "val_accuracy": 0.9, "processor": "EPYC", "isa": "avx2"}
    if refused:
        with pytest.raises(R.ForeignRowError):
            R.upsert_result_row(path, here)
    else:
        R.upsert_result_row(path, here)  # a failed run is no result: trained here, its row is replaced
        assert R.read_results(path)["processor"].tolist() == ["EPYC"]


def test_refuse_foreign_refuses_before_training_and_names_the_index(tmp_path):
    from nanogpt.core.runtime import processor_of

    path = R.runs_csv(tmp_path)
    R.upsert_result_row(path, {"run_id": "r1", "status": "ok", "val_accuracy": 0.8, "processor": "Xeon", "isa": "x"})
    here = R.describe_processor(R.processor_key(processor_of("cpu")))
    with pytest.raises(R.ForeignRowError, match=rf"^{path}: run r1 is already finished there, trained on Xeon \[x\]; "
                                                rf"here it runs on {re.escape(here)}, where"):
        R.refuse_foreign(path, "r1", "cpu")
    R.refuse_foreign(path, "r2", "cpu")  # another run: nothing to refuse


def test_the_index_reads_every_row_unless_asked_for_finished_ones_and_an_empty_file_is_no_rows(tmp_path):
    path = R.runs_csv(tmp_path)
    R.upsert_result_row(path, {"run_id": "r1", "status": "failed", "val_accuracy": None})
    R.upsert_result_row(path, {"run_id": "r2", "status": "ok", "val_accuracy": 0.8})
    assert R.read_results(path)["run_id"].tolist() == ["r1", "r2"]
    assert R.read_results(path, finished_only=True)["run_id"].tolist() == ["r2"]
    path.write_bytes(b"")
    assert R.read_results(path).empty


def test_an_unreadable_index_is_named_with_the_readers_complaint(tmp_path):
    path = R.runs_csv(tmp_path)
    path.write_bytes(b"run_id\n\xff\xfe\n")
    with pytest.raises(R.ResultsIndexError, match=rf"^{path} is not a readable results index \(UnicodeDecodeError: "
                                                  r"'utf-8' codec can't decode byte 0xff"):
        R.read_results(path)
