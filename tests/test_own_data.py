"""A labelled file of one's own: read in any of four formats with its own columns and labels, trained on a
schedule that fits its size with the checkpoint chosen on a development slice, compared with both bags of words,
and logged quietly off a terminal."""
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import separable_csv, tiny_config

from nanogpt.data.imdb import DataValidationError, load_imdb
from nanogpt.data.userfile import UserFileError, code_labels, file_source, parse_source, read_labelled_file

ROWS = pd.DataFrame({"body": ["a fine film", "dull", "superb", "awful", "lovely", "tedious"],
                     "kind": ["pos", "neg", "pos", "neg", "pos", "neg"]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".csv":
        ROWS.to_csv(path, index=False)
    elif suffix == ".tsv":
        ROWS.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        ROWS.to_json(path, orient="records", lines=True)
    else:
        ROWS.to_parquet(path)
    frame, mapping = read_labelled_file(file_source(path, text="body", label="kind"))
    assert frame["text"].tolist() == ROWS["body"].tolist()
    assert frame["label"].tolist() == [1, 0, 1, 0, 1, 0] and mapping == {"neg": 0, "pos": 1}


def test_the_source_string_carries_columns_and_positive_label(tmp_path):
    spec = file_source(tmp_path / "m.csv", text="body", label="kind", positive="neg")
    assert spec == f"{tmp_path / 'm.csv'}?text=body&label=kind&positive=neg"
    parsed = parse_source(spec)
    assert (parsed.text, parsed.label, parsed.positive) == ("body", "kind", "neg")
    assert file_source(tmp_path / "m.csv") == str(tmp_path / "m.csv")  # defaults: the plain path, as before
    with pytest.raises(UserFileError, match=r"options after '\?' must be among.*\['colour'\]"):
        parse_source(f"{tmp_path / 'm.csv'}?colour=red")


@pytest.mark.parametrize("values, positive, labels, mapping", [
    (["positive", "negative", "positive"], None, [1, 0, 1], {"negative": 0, "positive": 1}),
    (["Yes", "No"], None, [1, 0], {"No": 0, "Yes": 1}),
    (["ham", "spam", "ham"], None, [0, 1, 0], {"ham": 0, "spam": 1}),  # unknown pair: sorted, the second positive
    (["ham", "spam", "ham"], "ham", [1, 0, 1], {"ham": 1, "spam": 0}),
    ([True, False, True], None, [1, 0, 1], {"False": 0, "True": 1}),
    (["1", "0", "1.0"], None, ["1", "0", "1.0"], {"0": 0, "1": 1}),  # numbers pass on to the 0/1 check
])
def test_labels_as_numbers_booleans_or_two_strings(values, positive, labels, mapping):
    coded, found = code_labels(pd.Series(values), "mine.csv", positive)
    assert coded.tolist() == labels and found == mapping


@pytest.mark.parametrize("values, positive, match", [
    (["good", "bad", "meh"], None, r"exactly two values; found 3 \('bad', 'good', 'meh'\)"),
    (["good", "good"], None, r"exactly two values; found 1"),
    (["good", None, "bad"], None, r"label is missing in rows 1"),
    (["good", "bad"], "great", r"positive='great' is not one of the labels \['bad', 'good'\]"),
])
def test_labels_that_cannot_be_two_classes_are_one_clear_error(values, positive, match):
    with pytest.raises(UserFileError, match=match):
        code_labels(pd.Series(values), "mine.csv", positive)


def test_file_errors_say_what_was_found_and_the_fix(tmp_path):
    ROWS.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(UserFileError, match=r"no column\(s\) \['text', 'label'\]; found \['body', 'kind'\]. Fix: "
                                             r"name them with --text-column NAME and --label-column NAME"):
        read_labelled_file(str(tmp_path / "m.csv"))
    (tmp_path / "m.xlsx").write_bytes(b"PK")
    with pytest.raises(UserFileError, match="unsupported file type '.xlsx'"):
        load_imdb(str(tmp_path / "m.xlsx"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError, match="bad.parquet: not a readable Parquet file"):
        load_imdb(str(tmp_path / "bad.parquet"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{broken\n')
    with pytest.raises(DataValidationError, match="bad.jsonl: not a readable JSON Lines file"):
        load_imdb(str(tmp_path / "bad.jsonl"))


def test_other_columns_or_labels_are_other_data_for_the_run_id(tmp_path):
    ROWS.assign(text=ROWS["body"], label=ROWS["kind"]).to_csv(tmp_path / "m.csv", index=False)
    plain = tiny_config(tmp_path, source=str(tmp_path / "m.csv"))
    other = tiny_config(tmp_path, source=file_source(tmp_path / "m.csv", text="body", label="kind"))
    flipped = tiny_config(tmp_path, source=file_source(tmp_path / "m.csv", positive="neg"))
    assert len({plain.run_id(), other.run_id(), flipped.run_id()}) == 3


# ------------------------------------------------------------------------------------ the schedule and the choice


def test_the_schedule_follows_the_size_of_the_data():
    from nanogpt.run.config import TrainConfig
    from nanogpt.run.selection import scheduled

    cfg = TrainConfig(batch_size=32, epochs=3, evals_per_epoch=2, warmup_steps=100, max_steps=9999)
    small, large = scheduled(cfg, 300), scheduled(cfg, 30_000)
    assert (small.max_steps, small.eval_interval, small.warmup_steps) == (30, 5, 3)  # 10 batches a pass
    assert (large.max_steps, large.eval_interval, large.warmup_steps) == (2814, 469, 100)  # 938 batches a pass
    assert scheduled(cfg.replace(epochs=None), 300).max_steps == 9999  # the study profiles: steps as given


def test_the_development_slice_is_carved_from_the_training_part(tmp_path):
    from nanogpt.data.imdb import load_tokenized
    from nanogpt.run.selection import carve_dev

    source = separable_csv(tmp_path / "s.csv", n=400)
    train = load_tokenized(source, block_size=64, cache_dir=tmp_path)["train"]
    rest, dev = carve_dev(train, 0.2, 1337)
    assert len(rest) + len(dev) == len(train) and len(dev) == 64
    rows = {tuple(train.ids(i)) for i in range(len(train))}
    kept = {tuple(rest.ids(i)) for i in range(len(rest))}
    held = {tuple(dev.ids(i)) for i in range(len(dev))}
    assert kept | held == rows and not kept & held
    assert dev.labels.mean() == pytest.approx(train.labels.mean(), abs=0.02)  # stratified
    again, dev2 = carve_dev(train, 0.2, 1337)
    assert np.array_equal(dev.tokens, dev2.tokens)  # the same slice for every training seed


def test_dev_selection_keeps_the_best_and_stops_after_its_patience():
    from nanogpt.run.selection import DevSelection

    model = torch.nn.Linear(2, 1)
    sel = DevSelection(patience=2, keep_best=True)
    torch.nn.init.constant_(model.weight, 1.0)
    assert not sel.observe(10, 0.8, 0.5, model)
    torch.nn.init.constant_(model.weight, 2.0)
    assert not sel.observe(20, 0.8, 0.4, model)  # same accuracy, lower loss: better
    torch.nn.init.constant_(model.weight, 3.0)
    assert not sel.observe(30, 0.7, 0.3, model)
    assert sel.observe(40, 0.79, 0.3, model) and sel.stopped_at == 40
    assert sel.restore(model) and model.weight.flatten().tolist() == [2.0, 2.0]
    assert sel.summary() == {"best_step": 20, "best_dev_accuracy": 0.8, "best_dev_loss": 0.4, "stopped_early_at": 40}
    resumed = DevSelection(patience=2, keep_best=True)
    resumed.load(sel.state())
    assert resumed.summary() == sel.summary() and resumed.restore(model)
    assert not DevSelection().restore(model)  # keep_best off: the last weights stay


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """The `own` profile's way of training (a schedule in passes, a development slice, early stopping, the best
    checkpoint kept) at a tiny size, on a file with its own columns and string labels."""
    from nanogpt.run.train import train

    tmp = tmp_path_factory.mktemp("own")
    frame = pd.read_csv(separable_csv(tmp / "s.csv", n=640))
    path = tmp / "mine.parquet"
    frame.rename(columns={"text": "body", "label": "kind"}).assign(kind=frame["label"].map({1: "good", 0: "bad"})) \
        .to_parquet(path)
    cfg = tiny_config(tmp, source=file_source(path, text="body", label="kind", positive="good"), train_limit=None,
                      val_limit=None, precision="fp32", epochs=10, evals_per_epoch=2, dev_fraction=0.15,
                      early_stopping=3, keep_best=True, learning_rate=3e-3, dropout=0.0, warmup_steps=5)
    return cfg, train(cfg)


def test_the_kept_checkpoint_is_the_best_on_the_development_slice(own_run):
    from nanogpt.run.evaluate import evaluate
    from nanogpt.run.selection import carve_dev
    from nanogpt.serve.predict import Classifier

    cfg, result = own_run
    row, meta = result.row, json.loads((result.run_dir / "meta.json").read_text())
    dev_points = result.history.dropna(subset=["dev_accuracy"])
    # the rule: the highest development accuracy; among equal ones, the lowest development loss (then the first)
    best = dev_points.sort_values(["dev_accuracy", "dev_loss"], ascending=[False, True], kind="stable").iloc[0]
    assert row["best_step"] == int(best["step"]) and row["best_dev_accuracy"] == best["dev_accuracy"]
    assert row["best_dev_accuracy"] >= dev_points["dev_accuracy"].iloc[-1]  # never worse than the last point
    assert meta["selection"]["best_step"] == row["best_step"] and meta["label_mapping"] == {"bad": 0, "good": 1}
    assert meta["schedule"]["epochs"] == 10 and meta["schedule"]["steps_run"] == row["steps"] == result.steps
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["step"] == row["best_step"]
    # the saved weights score the development slice as the best point did: they are that point's weights
    from nanogpt.data.imdb import load_splits

    clf = Classifier.load(result.checkpoint, precision="fp32")
    train_split, _ = load_splits(cfg)
    _, dev = carve_dev(train_split, cfg.dev_fraction, cfg.split_seed)
    probs, _ = evaluate(clf.model, clf.criterion, dev, torch.device("cpu"), "fp32", 64, 8)
    assert float(np.mean((probs > 0.5) == dev.labels)) == row["best_dev_accuracy"]
    # and the validation score recorded is the kept checkpoint's, not the last step's
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")
    val_texts = load_imdb(cfg.source)["validation"]["text"]
    np.testing.assert_allclose(clf.predict(val_texts).probabilities, saved["positive_probability"], atol=1e-5)


def test_early_stopping_ends_the_run_before_its_schedule(tmp_path, capsys):
    from nanogpt.run.train import train

    source = separable_csv(tmp_path / "s.csv", n=480)
    cfg = tiny_config(tmp_path, source=source, train_limit=None, val_limit=None, precision="fp32", epochs=40,
                      evals_per_epoch=1, dev_fraction=0.2, early_stopping=2, keep_best=True, learning_rate=3e-3,
                      dropout=0.0, warmup_steps=5, keep="none", quiet=False)
    result = train(cfg)
    said = (f"run {result.run_id}: stopped early at step {result.steps}: no better development accuracy in 2 validation "
            f"passes (best {result.row['best_dev_accuracy']:.4f} at step {result.row['best_step']})\n")
    assert said in capsys.readouterr().out  # the user reads why the run ended before its schedule
    assert result.row["model_sha256"] == "" and not (result.run_dir / "model.pt").exists()  # keep none: no weights
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert result.row["stopped_early_at"] == result.steps < meta["schedule"]["max_steps"]
    evaluated = result.history.dropna(subset=["dev_accuracy"])
    after_best = evaluated[evaluated["step"] > result.row["best_step"]]
    assert len(after_best) == 2 and (after_best["dev_accuracy"] <= result.row["best_dev_accuracy"]).all()


# ------------------------------------------------------------------------------------------------ quiet logs


def test_off_a_terminal_progress_is_a_line_every_few_seconds():
    from nanogpt.run.progress import LineProgress, progress

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(100, desc="ce seed 0", unit="step", every_s=10, stream=out, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.5  # 50 s in all
        bar.set_postfix(loss="0.1")
        bar.update()
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and lines[-1] == "ce seed 0: 100/100 steps, 50 s (loss=0.1)"  # at 10, 20, ... s, once more
    assert isinstance(progress(10, stream=io.StringIO()), LineProgress)  # a file or a pipe: lines
    ordered = LineProgress(2, desc="study", unit="run", stream=out, clock=lambda: now[0])
    ordered.set_postfix({"bce": "86.00%", "ce": "85.00%"}, refresh=False)  # the study's form: a dict of arms
    ordered.update()
    ordered.close()
    assert out.getvalue().splitlines()[-1] == "study: 1/2 runs, 0 s (bce=86.00%, ce=85.00%)"


def test_a_run_logged_to_a_file_is_short(tmp_path, capsys):
    from nanogpt.run.train import train

    train(tiny_config(tmp_path, quiet=False, max_steps=40, eval_interval=20))
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) <= 3, err[:500]


# ------------------------------------------------------------------------------------------------ the comparison


def test_the_advice_follows_the_numbers():
    from nanogpt.study.compare import deploy_advice

    def rows(gpt, tfidf, nbsvm):
        return [{"model": "GPT", "accuracy": gpt, "reviews_per_second": 500},
                {"model": "TF-IDF", "accuracy": tfidf, "reviews_per_second": 6000},
                {"model": "NBSVM", "accuracy": nbsvm, "reviews_per_second": 5000}]

    assert deploy_advice(rows(85.0, 88.0, 89.0), 2000).startswith("Deploy NBSVM: it is 4.00 points more accurate")
    assert "10x more reviews per second" in deploy_advice(rows(85.0, 88.0, 89.0), 2000)
    assert deploy_advice(rows(93.0, 88.0, 89.0), 2000).startswith("Deploy the GPT: +4.00 points over NBSVM")
    close = deploy_advice(rows(89.5, 88.0, 89.0), 2000)  # +0.5 on 2,000 texts: within +-1.37
    assert close.startswith("Deploy NBSVM: the GPT is +0.50 points ahead, within the +-1.37 points")
    tie = deploy_advice(rows(90.5, 86.17, 90.5 - 1e-14), 600)  # a tie that floats leave a hair apart
    assert tie.startswith("Deploy NBSVM: it scores what the GPT scores (90.50%) on the same 600 validation texts")
    assert "-0.00" not in tie and "training the GPT on this file added nothing" in tie


def test_a_run_on_ones_own_file_ends_with_the_comparison_and_a_card(own_run, capsys):
    from nanogpt.__main__ import main

    cfg, result = own_run
    assert main(["compare", str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    card = json.loads((result.run_dir / "model_card.json").read_text())
    assert [r["model"].split(" ")[0] for r in card["comparison"]] == ["GPT", "TF-IDF", "NBSVM:"]
    gpt, tfidf, nbsvm = card["comparison"]
    assert gpt["accuracy"] == pytest.approx(100 * result.val_accuracy)
    assert card["data"]["n_val"] == result.row["n_val"] and card["data"]["label_mapping"] == {"bad": 0, "good": 1}
    assert card["chosen_checkpoint"]["best_step"] == result.row["best_step"]
    assert card["deploy"].startswith("Deploy ") and card["deploy"] in out
    assert f"{gpt['accuracy']:.2f}%" in out and f"{nbsvm['accuracy']:.2f}%" in out and "'good' -> 1" in out
    assert all(r["reviews_per_second"] > 0 for r in card["comparison"])
    assert card["processor"]["processor"]


def test_the_command_line_folds_columns_into_the_source(tmp_path, capsys):
    from nanogpt.__main__ import main

    assert main(["train", "--loss", "ce", "--text-column", "body"]) == 2
    assert "describe a file of your own; --source bundled has its own columns" in capsys.readouterr().err
    ROWS.to_csv(tmp_path / "m.csv", index=False)
    assert main(["train", "--loss", "ce", "--source", str(tmp_path / "m.csv"), "--out", str(tmp_path / "r")]) == 1
    assert "no column(s) ['text', 'label']" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_07_walks_a_file_of_ones_own_to_the_advice(tmp_path):
    """Notebook 07 headless on a file with its own columns and string labels, at a tiny size: the run keeps its
    best development checkpoint, the figure is saved, and the card's advice is what the notebook shows."""
    from pathlib import Path

    import papermill as pm

    frame = pd.read_csv(separable_csv(tmp_path / "s.csv", n=480))
    frame.rename(columns={"text": "body", "label": "kind"}).assign(kind=frame["label"].map({1: "yes", 0: "no"})) \
        .to_csv(tmp_path / "mine.csv", index=False)
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "epochs": 4, "learning_rate": 3e-3,
            "dropout": 0.0, "precision": "fp32", "cache_dir": str(tmp_path / "cache")}
    out = pm.execute_notebook(str(notebooks / "07_your_own_data.ipynb"), str(tmp_path / "07.ipynb"),
                              parameters={"source": str(tmp_path / "mine.csv"), "text_column": "body",
                                          "label_column": "kind", "results_dir": str(tmp_path / "results"),
                                          "figures_dir": str(tmp_path / "figures"), "overrides": tiny},
                              kernel_name="python3", progress_bar=False, cwd=str(notebooks))
    cards = list((tmp_path / "results" / "runs").glob("*/model_card.json"))
    assert len(cards) == 1
    card = json.loads(cards[0].read_text())
    assert card["data"]["label_mapping"] == {"no": 0, "yes": 1} and card["chosen_checkpoint"]["best_step"] > 0
    assert (tmp_path / "figures" / "own" / "07_selection.png").stat().st_size > 10_000
    shown = json.dumps(out["cells"][-1]["outputs"])
    assert card["deploy"] in shown


def test_a_run_from_a_classifier_is_compared_with_that_classifier_as_it_is(tmp_path, tiny_run):
    """Started from a finished classifier, the comparison has one more row: the start as it is, never trained on
    the file, on the same validation texts (training a model that already does the task can cost it)."""
    from nanogpt.run.train import train
    from nanogpt.serve.predict import Classifier
    from nanogpt.study.compare import compare_run, format_card

    start = tiny_run["ce"].checkpoint
    cfg = tiny_config(tmp_path, source=separable_csv(tmp_path / "s.csv", n=320), train_limit=None, val_limit=None,
                      init=f"lm:{start}", epochs=1, evals_per_epoch=1, dev_fraction=0.15, keep_best=True)
    result = train(cfg)
    card = compare_run(result.run_dir)
    models = [r["model"] for r in card["comparison"]]
    assert models[1] == "the start as it is (model.pt, not trained on this file)" and len(models) == 4
    val = load_imdb(cfg.source, cfg.split_seed, cfg.val_fraction)["validation"]
    probs = Classifier.load(start).predict(list(val["text"])).probabilities
    expected = 100 * np.mean((probs > 0.5) == np.asarray(val["label"]))
    assert card["comparison"][1]["accuracy"] == pytest.approx(expected)
    assert card["comparison"][1]["reviews_per_second"] > 0 and "the start as it is" in format_card(card)


def test_the_measurement_files_come_from_the_validation_part_and_do_not_overlap(tmp_path):
    """docs/own-data.md's files: the reporting file is the whole-text file cut to two sentences, tuning file 2 is
    the rest of the validation part, and none of their texts is a training review."""
    from nanogpt.data.imdb import load_imdb
    from nanogpt.study.own import measurement_files
    from nanogpt.study.probe import first_sentences

    paths = measurement_files(tmp_path, n=50)
    short, rest, whole = (pd.read_csv(paths[k]) for k in ("val3k-short", "valrest-short", "val3k-whole"))
    dsd = load_imdb()
    val = dsd["validation"].to_pandas()
    assert len(short) == len(whole) == 50 and len(rest) == len(val) - 50
    assert set(whole["text"]) <= set(val["text"]) and not set(whole["text"]) & set(dsd["train"]["text"])
    assert list(short["text"]) == [first_sentences(t) for t in whole["text"]]
    assert list(short["label"]) == list(whole["label"])
    assert not set(rest["text"]) & set(short["text"])
    assert measurement_files(tmp_path, n=10)["val3k-short"].read_bytes() == paths["val3k-short"].read_bytes()
