import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt.run.checkpoints import CheckpointError
from nanogpt.serve.predict import Classifier


@pytest.fixture(scope="module")
def clf(tiny_run):
    return Classifier.load(tiny_run["ce"].checkpoint)


def test_predict_batch_and_single(clf, tiny_run):
    texts = ["An absolute delight from start to finish.", "Dull, slow and badly acted.", "ok"]
    preds = clf.predict(texts)
    assert preds.labels.dtype == np.int64 and set(preds.labels) <= {0, 1}
    assert ((preds.probabilities >= 0) & (preds.probabilities <= 1)).all()
    assert np.array_equal(preds.labels, (preds.probabilities > 0.5).astype(int))
    one = clf.predict(texts[1])
    assert len(one) == 1 and one.probabilities[0] == pytest.approx(preds.probabilities[1], abs=1e-6)
    assert clf.predict(texts, batch_size=1).probabilities == pytest.approx(preds.probabilities, abs=1e-6)
    assert preds.sentiments[0] in ("negative", "positive") and preds.to_records()[0]["label"] in (0, 1)


def test_predictions_match_training_evaluation(learnt_run):
    """The classifier scores validation reviews exactly as the training loop did: review by review, the
    probability the run saved, from a model that learnt (both labels among its answers), on reviews whose
    sentiment sits in their last words (a scorer that read less than the run did would miss it)."""
    import pandas as pd

    from nanogpt.data.imdb import load_imdb

    cfg, result = learnt_run
    clf = Classifier.load(result.checkpoint, precision="fp32")
    val = load_imdb(cfg.source)["validation"]
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")
    assert len(saved) == len(val) and saved["label"].tolist() == list(val["label"])
    preds = clf.predict(val["text"])
    np.testing.assert_allclose(preds.probabilities, saved["positive_probability"], rtol=0, atol=1e-5)
    assert np.array_equal(preds.labels, (saved["positive_probability"].to_numpy() > 0.5).astype(int))
    assert result.val_accuracy >= 0.9 and set(preds.labels.tolist()) == {0, 1}  # the fixture discriminates


def test_serving_takes_the_last_token_shortcut_with_the_runs_own_numbers(tmp_path):
    """A run pooling its last token, as every profile does: the classifier runs the last block at that token only
    (its MLP sees one row per review) and still gives, review by review, the probabilities the run saved."""
    import pandas as pd
    from conftest import separable_csv, tiny_config

    from nanogpt.data.imdb import load_imdb
    from nanogpt.run.train import train

    cfg = tiny_config(tmp_path, loss="bce", source=separable_csv(tmp_path / "separable.csv"), train_limit=None,
                      val_limit=None, precision="fp32", max_steps=100, eval_interval=50, warmup_steps=5,
                      learning_rate=3e-3, dropout=0.0, pooling="last")
    result = train(cfg)
    clf = Classifier.load(result.checkpoint, precision="fp32")
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")
    texts = load_imdb(cfg.source)["validation"]["text"]
    shapes = []
    clf.model.transformer.h[-1].mlp.c_fc.register_forward_hook(lambda m, a, out: shapes.append(a[0].dim()))
    preds = clf.predict(texts)
    assert clf.model.last_position_only and set(shapes) == {2}  # one row per review at the last block
    np.testing.assert_allclose(preds.probabilities, saved["positive_probability"], rtol=0, atol=1e-5)
    assert np.array_equal(preds.labels, (saved["positive_probability"].to_numpy() > 0.5).astype(int))
    assert result.val_accuracy >= 0.9 and set(preds.labels.tolist()) == {0, 1}


def test_long_review_is_truncated_like_training(clf):
    long = "This film was wonderful. " * 5000
    p = clf.predict(long)
    assert len(p) == 1 and 0 <= p.probabilities[0] <= 1
    assert len(clf.tokenize(long).ids(0)) == clf.model.config.block_size


def test_a_long_review_keeps_the_checkpoints_head_fraction(clf):
    """head_tail keeps the head's share the run trained with (here 0.5, not the default 0.25)."""
    from nanogpt.data.tokens import tokenize_texts

    text = " ".join(f"word{i}" for i in range(400))
    half = Classifier(clf.model, clf.criterion, "head_tail", 0.5, torch.device("cpu"), "fp32")
    block = clf.model.config.block_size
    expected = tokenize_texts([text], None, block, "head_tail", 0.5).ids(0)
    np.testing.assert_array_equal(half.tokenize(text).ids(0), expected)
    assert not np.array_equal(expected, tokenize_texts([text], None, block, "head_tail", 0.25).ids(0))


@pytest.mark.parametrize("bad, err, match", [
    ("", ValueError, "empty"), ("   \n\t", ValueError, "empty"), (None, TypeError, "NoneType"),
    (42, TypeError, "int"), (["fine", 3], TypeError, "Review 1 is a int"), (["fine", ""], ValueError, "Review 1"),
    ([], ValueError, "No reviews"),
])
def test_bad_input_is_a_clear_error(clf, bad, err, match):
    with pytest.raises(err, match=match):
        clf.predict(bad)


def test_any_sequence_of_strings_a_python_user_holds(clf):
    """A datasets Column, a pandas Series, a numpy array of strings, a tuple, a generator: the same answers as
    the list (once `load_imdb()["validation"]["text"]` raised 'got Column'); sets and dicts are refused."""
    import pandas as pd

    from nanogpt.data.imdb import load_imdb

    column = load_imdb()["validation"].select(range(3))["text"]
    texts = list(column)
    expected = clf.predict(texts).probabilities
    for held in (column, pd.Series(texts), np.array(texts), tuple(texts), (t for t in texts)):
        assert clf.predict(held).probabilities.tolist() == expected.tolist(), type(held).__name__
    for unordered in (set(texts), dict.fromkeys(texts)):
        with pytest.raises(TypeError, match="sequence of reviews"):
            clf.predict(unordered)
    with pytest.raises(TypeError, match="Review 1 is a float"):
        clf.predict(pd.Series(["fine", None]))  # pandas' missing value: a clear error, not a crash


def test_any_unicode(clf):
    texts = ["🎬🍿 loved it!!", "فيلم رائع", "tab\tnul\x00bell\x07", "\ud800 lone surrogate", "<|endoftext|>"]
    p = clf.predict(texts)
    assert len(p) == 5 and np.isfinite(p.probabilities).all()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_foreign_and_corrupt_checkpoints(tmp_path, tiny_run):
    good = tiny_run["ce"].checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match="truncated.bin.*not a readable checkpoint"):
        Classifier.load(_write(tmp_path / "truncated.bin", good[: len(good) // 2]))
    with pytest.raises(CheckpointError, match="random.bin"):
        Classifier.load(_write(tmp_path / "random.bin", np.random.default_rng(0).bytes(4096)))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        Classifier.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        Classifier.load(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_that_runs_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "nanogpt-imdb-classifier/1", "model_state": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        Classifier.load(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    _write(tmp_path / "evil2.pt", pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        Classifier.load(tmp_path / "evil2.pt")
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_of_other_shape_or_loss(tmp_path, tiny_run):
    ckpt = torch.load(tiny_run["ce"].checkpoint, weights_only=True)
    ckpt["loss"] = "bce"  # a CE model (2 outputs) labelled as BCE
    torch.save(ckpt, tmp_path / "mislabelled.pt")
    with pytest.raises(CheckpointError, match="mislabelled.pt: loss 'bce' needs 1 outputs but the model has 2"):
        Classifier.load(tmp_path / "mislabelled.pt")  # the message names the file
    ckpt = torch.load(tiny_run["ce"].checkpoint, weights_only=True)
    ckpt["model_config"]["n_embd"] = 64
    torch.save(ckpt, tmp_path / "reshaped.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        Classifier.load(tmp_path / "reshaped.pt")



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=400))
def test_any_text_gives_a_label_or_a_clear_error(clf, text):
    if not text.strip():
        with pytest.raises(ValueError, match="empty"):
            clf.predict(text)
        return
    p = clf.predict([text, text])
    assert set(p.labels.tolist()) <= {0, 1} and p.labels[0] == p.labels[1]
    assert ((p.probabilities >= 0) & (p.probabilities <= 1)).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.binary(), st.dictionaries(st.text(), st.integers()),
                       st.lists(st.one_of(st.none(), st.integers(), st.binary()), min_size=1, max_size=3)))
def test_non_text_is_a_type_error(clf, value):
    with pytest.raises(TypeError):
        clf.predict(value)


def test_checkpoint_of_an_older_version_with_the_attention_field_loads(tmp_path, tiny_run, clf):
    """Checkpoints written before the kernel choice left ModelConfig carry model_config['attention']."""
    ckpt = torch.load(tiny_run["ce"].checkpoint, weights_only=True)
    assert "attention" not in ckpt["model_config"]  # an execution detail is not saved any more
    ckpt["model_config"]["attention"] = "sdpa"
    torch.save(ckpt, tmp_path / "old.pt")
    old = Classifier.load(tmp_path / "old.pt")
    texts = ["A fine film.", "Two hours I will never get back."]
    assert old.predict(texts).probabilities == pytest.approx(clf.predict(texts).probabilities, abs=1e-6)


def test_tokenize_needs_no_labels(clf):
    split = clf.tokenize(["Great.", "Bad."])
    assert split.labels is None and len(split) == 2 and split.lengths.min() >= 1


def test_predict_imports_neither_the_training_loop_nor_the_data_stack():
    """`import nanogpt.serve.predict` (and so a service) loads model, runtime, evaluation and checkpoints only."""
    import subprocess
    import sys

    code = ("import sys, nanogpt.serve.predict; heavy = ['pandas', 'datasets', 'sklearn', 'scipy', 'transformers', "
            "'nanogpt.run.train', 'nanogpt.data.imdb']; print([m for m in heavy if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_predictions_as_records_and_sentiments():
    import numpy as np

    from nanogpt.serve.predict import Predictions

    preds = Predictions(labels=np.array([1, 0], dtype=np.int64), probabilities=np.array([0.75, 0.125]))
    records = preds.to_records()
    assert records == [{"label": 1, "sentiment": "positive", "positive_probability": 0.75},
                       {"label": 0, "sentiment": "negative", "positive_probability": 0.125}]
    assert all(type(r["label"]) is int and type(r["positive_probability"]) is float for r in records)
    assert preds.sentiments == ["positive", "negative"] and len(preds) == 2


def test_predictions_are_computed_from_the_checkpoint_when_nothing_else_holds_them(learnt_run, tmp_path):
    import shutil

    import numpy as np
    import pandas as pd

    from nanogpt.run.predictions import load_val_predictions
    from nanogpt.run.rundir import RunDir

    _, result = learnt_run
    out = tmp_path / "results"
    folder = RunDir(out, result.run_id).path
    shutil.copytree(result.run_dir, folder)
    (folder / "val_predictions.csv").unlink()
    reference = pd.read_csv(result.run_dir / "val_predictions.csv")
    got = load_val_predictions(out, result.run_id)
    assert list(got.columns) == ["row", "label", "positive_probability"] and list(got["row"]) == list(range(len(reference)))
    assert (got["label"] == reference["label"]).all()
    np.testing.assert_allclose(got["positive_probability"], reference["positive_probability"], atol=1e-6)
    saved = pd.read_csv(folder / "val_predictions.csv")  # computed once, then read from the folder
    np.testing.assert_allclose(saved["positive_probability"], reference["positive_probability"], atol=1e-6)
    (folder / "model.pt").unlink()
    assert load_val_predictions(out, result.run_id)["label"].tolist() == reference["label"].tolist()


def _computed_again(run_dir, results, run_id, edit=None):
    """`load_val_predictions` of a copy of the run folder that holds only its checkpoint (edited by `edit`)."""
    import shutil

    from nanogpt.run.predictions import load_val_predictions
    from nanogpt.run.rundir import RunDir

    folder = RunDir(results, run_id).path
    shutil.copytree(run_dir, folder)
    (folder / "val_predictions.csv").unlink()
    if edit is not None:
        ckpt = torch.load(folder / "model.pt", weights_only=True)
        edit(ckpt)
        torch.save(ckpt, folder / "model.pt")
    return load_val_predictions(results, run_id)


def test_a_windows_run_and_an_older_checkpoint_are_computed_as_they_were_scored(learnt_run, tmp_path):
    """The computed branch reads the checkpoint's own reading and stride (a windows run: whole reviews, windows
    16 tokens apart), and a checkpoint written before `reading`, `train_limit`, `attention` and `window_stride`
    were recorded falls back to what those runs did (one truncated block, the whole split, the default kernel).
    (Its precision stays: "auto" would be bf16 on a CPU with AMX and move the probabilities.)"""
    import numpy as np
    import pandas as pd

    from nanogpt.run.train import train

    cfg, result = learnt_run
    windows = train(cfg.replace(out_dir=str(tmp_path / "w"), reading="windows", truncation="random_window",
                                window_stride=16, max_steps=30, eval_interval=30))
    reference = pd.read_csv(windows.run_dir / "val_predictions.csv")
    got = _computed_again(windows.run_dir, tmp_path / "again", windows.run_id)
    np.testing.assert_allclose(got["positive_probability"], reference["positive_probability"], atol=1e-6)
    from nanogpt.data.imdb import load_imdb  # the classifier reads the run's windows too, review by review

    served = Classifier.load(windows.checkpoint, precision="fp32").predict(load_imdb(cfg.source)["validation"]["text"])
    np.testing.assert_allclose(served.probabilities, reference["positive_probability"], rtol=0, atol=1e-5)
    default_stride = _computed_again(windows.run_dir, tmp_path / "half", windows.run_id,
                                     lambda c: c["train_config"].update(window_stride=None))
    assert np.abs(default_stride["positive_probability"] - reference["positive_probability"]).max() > 1e-4

    def older(ckpt):
        for key in ("reading", "train_limit", "attention", "window_stride"):
            ckpt["train_config"].pop(key)

    reference = pd.read_csv(result.run_dir / "val_predictions.csv")
    got = _computed_again(result.run_dir, tmp_path / "older", result.run_id, older)
    np.testing.assert_allclose(got["positive_probability"], reference["positive_probability"], atol=1e-6)


def test_the_classifier_records_how_it_reads_and_refuses_what_it_cannot(clf):
    device = torch.device("cpu")

    def make(**kw):
        args = dict(model=clf.model, criterion=clf.criterion, truncation="head_tail", head_fraction=0.25,
                    device=device, precision="fp32")
        return Classifier(**{**args, **kw})

    plain = make()
    assert plain.reading == "truncated" and plain.window_stride is None and plain.checkpoint == {}
    assert plain.device == device and plain.precision == "fp32" and plain.loss == clf.criterion.name
    block = clf.model.config.block_size
    assert make(reading="windows").window_stride == block // 2  # half a block by default
    assert make(reading="windows", window_stride=5).window_stride == 5
    assert make(checkpoint={"step": 3}).checkpoint == {"step": 3}
    assert make(truncation="random_window", reading="windows").reading == "windows"
    with pytest.raises(ValueError, match=r"^This model was trained on random windows: read it with "
                                         r"reading='windows'\.$"):
        make(truncation="random_window")
    with pytest.raises(ValueError, match=r"reading must be one of \('truncated', 'windows'\), got 'whole'"):
        make(reading="whole")
    with pytest.raises(ValueError, match="window_stride must be an integer between 1 and block_size"):
        make(reading="windows", window_stride=block + 1)


def test_load_reads_long_reviews_as_the_checkpoint_records(tmp_path, tiny_run):
    from nanogpt.run.checkpoints import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_run["ce"].checkpoint)
    ckpt.pop("format")
    older = {k: v for k, v in ckpt.items() if k not in ("reading", "window_stride")}  # before windows existed
    save_checkpoint(tmp_path / "older.pt", older)
    assert Classifier.load(tmp_path / "older.pt").reading == "truncated"
    save_checkpoint(tmp_path / "windows.pt", {**ckpt, "reading": "windows", "window_stride": 7})
    windows = Classifier.load(tmp_path / "windows.pt")
    assert windows.reading == "windows" and windows.window_stride == 7
    assert Classifier.load(tmp_path / "windows.pt", window_stride=5).window_stride == 5  # the caller's stride wins
    half = ckpt["model_config"]["block_size"] // 2
    save_checkpoint(tmp_path / "default.pt", {**ckpt, "reading": "windows", "window_stride": None})
    assert Classifier.load(tmp_path / "default.pt").window_stride == half
    told = Classifier.load(tmp_path / "windows.pt", reading="truncated")
    assert told.reading == "truncated" and told.window_stride is None


def test_load_keeps_the_checkpoints_cut_device_and_record(tmp_path, tiny_run):
    from nanogpt.run.checkpoints import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_run["ce"].checkpoint)
    ckpt.pop("format")
    save_checkpoint(tmp_path / "head.pt", {**ckpt, "truncation": "head", "head_fraction": 0.5})
    head = Classifier.load(tmp_path / "head.pt")
    assert head.truncation == "head" and head.head_fraction == 0.5
    assert head.device == torch.device("cpu") and head.precision == "fp32"
    assert head.checkpoint["truncation"] == "head" and head.checkpoint["loss"] == "ce"
    bare = {k: v for k, v in ckpt.items() if k not in ("truncation", "head_fraction")}
    save_checkpoint(tmp_path / "bare.pt", bare)
    defaults = Classifier.load(tmp_path / "bare.pt")
    assert defaults.truncation == "head_tail" and defaults.head_fraction == 0.25


def test_windows_tokenize_whole_reviews_and_check_them(clf):
    device = torch.device("cpu")
    windows = Classifier(clf.model, clf.criterion, "head_tail", 0.25, device, "fp32", reading="windows")
    long_review = "a film " * 400  # far longer than the block
    whole = windows.tokenize([long_review, "short"])
    cut = clf.tokenize([long_review, "short"])
    assert int(whole.lengths[0]) > clf.model.config.block_size >= int(cut.lengths[0])
    assert int(whole.lengths[1]) == int(cut.lengths[1])
    with pytest.raises(ValueError, match="empty"):
        windows.tokenize(["  "])
