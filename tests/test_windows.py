"""Reading whole reviews: overlapping windows at scoring time, random windows in training (data/windows.py)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import spy, tiny_config

from nanogpt.core.losses import get_criterion
from nanogpt.core.model import GPTClassifier, ModelConfig
from nanogpt.core.runtime import resolve_device
from nanogpt.data.tokens import TokenizedSplit
from nanogpt.data.windows import (
    expand_windows,
    pool_windows,
    random_windows,
    resolved_stride,
    window_starts,
    windows_per_review,
)
from nanogpt.run.evaluate import positive_probabilities, window_logits


def packed(lengths, labels=None):
    """Reviews whose token ids say where they sit: review i holds 1000 i, 1000 i + 1, ..."""
    tokens = np.concatenate([np.arange(1000 * i, 1000 * i + n) for i, n in enumerate(lengths)]).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedSplit(tokens, offsets, None if labels is None else np.asarray(labels), np.asarray(lengths))


@pytest.mark.parametrize("block, stride", [(8, 4), (8, 8), (8, 1), (8, 3), (5, 5)])
def test_windows_cover_every_token_in_order_and_no_more(block, stride):
    lengths = [1, 4, 7, 8, 9, 12, 16, 17, 40, 41]
    split = packed(lengths)
    windows, owner = expand_windows(split, block, stride)
    assert (np.diff(owner) >= 0).all() and np.array_equal(np.bincount(owner), windows_per_review(lengths, block, stride))
    for i, n in enumerate(lengths):
        mine = [windows.ids(w).astype(int) for w in np.flatnonzero(owner == i)]
        assert all(len(w) == min(n, block) for w in mine)
        assert all((np.diff(w) == 1).all() for w in mine)  # contiguous pieces of the review
        assert mine[0][0] == 1000 * i and mine[-1][-1] == 1000 * i + n - 1  # from its first token to its last
        covered = np.unique(np.concatenate(mine))
        assert np.array_equal(covered, 1000 * i + np.arange(n))
        starts = [w[0] - 1000 * i for w in mine]
        assert np.array_equal(starts, window_starts(n, block, stride))
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))  # never more than a stride apart


def test_pooling_is_the_mean_of_each_reviews_windows():
    owner = np.array([0, 1, 1, 1, 2, 2])
    logits = np.array([[1, 2], [0, 3], [3, 0], [6, 6], [-1, 1], [1, -1]], dtype=np.float32)
    np.testing.assert_array_equal(pool_windows(logits, owner, 3), [[1, 2], [3, 3], [0, 0]])
    with pytest.raises(ValueError, match="no window"):
        pool_windows(logits, owner, 4)


def test_stride_is_half_a_block_by_default_and_checked():
    assert resolved_stride(256, None) == 128 and resolved_stride(256, 256) == 256
    for bad in (0, 257, 2.5):
        with pytest.raises(ValueError, match="window_stride"):
            resolved_stride(256, bad)


def test_random_windows_are_pieces_of_their_review_drawn_from_the_generator():
    split = packed([3, 20, 50, 8], labels=[0, 1, 1, 0])
    idx = np.array([2, 0, 1, 3, 2])
    a = random_windows(split, idx, 8, np.random.default_rng([5, 7, 1]))
    b = random_windows(split, idx, 8, np.random.default_rng([5, 7, 1]))
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, split.labels[idx])
    for j, i in enumerate(idx):
        w = a.ids(j).astype(int)
        assert len(w) == min(split.lengths[i], 8) and (np.diff(w) == 1).all()
        assert 1000 * i <= w[0] and w[-1] <= 1000 * i + split.lengths[i] - 1
    starts = {int(random_windows(split, [2], 8, np.random.default_rng(s)).tokens[0]) for s in range(200)}
    assert min(starts) == 2000 and max(starts) == 2042  # every offset, the first and the last included, is drawn


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTClassifier(ModelConfig(vocab_size=5000, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0,
                                     n_outputs=2, pooling="last", gelu="none")).eval()


def test_a_review_is_scored_by_its_windows_whatever_else_is_in_the_batch(model):
    cpu = resolve_device("cpu")
    rng = np.random.default_rng(0)
    lengths = [5, 16, 17, 40, 3, 90, 16]
    tokens = rng.integers(0, 5000, size=sum(lengths)).astype(np.uint16)
    split = TokenizedSplit(tokens, np.concatenate([[0], np.cumsum(lengths)]), None, np.asarray(lengths))
    crit = get_criterion("ce")
    together = positive_probabilities(model, crit, split, cpu, "fp32", batch_size=3, reading="windows", stride=8)
    for i in range(len(lengths)):
        alone = split.take([i])
        p = positive_probabilities(model, crit, alone, cpu, "fp32", batch_size=64, reading="windows", stride=8)
        np.testing.assert_allclose(p, together[i], atol=1e-6)  # other reviews and padding change nothing
        # by hand: the model over each window of the review, logits averaged
        ids = torch.from_numpy(alone.tokens.astype(np.int64))
        with torch.no_grad():
            by_hand = torch.stack([model(ids[s:s + 16][None])[0] for s in window_starts(lengths[i], 16, 8)]).mean(0)
        np.testing.assert_allclose(p, torch.softmax(by_hand, -1)[1].item(), atol=1e-6)
        if lengths[i] <= 16:  # a review that fits the block is read exactly as under the truncated reading
            assert p[0] == positive_probabilities(model, crit, alone, cpu, "fp32")[0]
    logits = window_logits(model, split, cpu, "fp32", 4, stride=8)
    assert logits.shape == (len(lengths), 2) and logits.dtype == np.float32


@pytest.mark.parametrize("change, match", [
    (dict(truncation="random_window"), "reading=windows"),
    (dict(window_stride=32), "only used by reading='windows'"),
    (dict(reading="windows", window_stride=65), "window_stride"),
    (dict(reading="all"), "reading must be one of"),
    (dict(truncation="middle"), "Unknown truncation"),
])
def test_reading_settings_are_checked(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(tmp_path, **change).validate()


def test_reading_is_part_of_the_run_id_and_the_default_keeps_old_ids(tmp_path):
    base = tiny_config(tmp_path)
    ids = {base.run_id(), base.replace(reading="windows").run_id(),
           base.replace(reading="windows", window_stride=64).run_id(),
           base.replace(reading="windows", truncation="random_window").run_id()}
    assert len(ids) == 4
    assert "reading" not in base.identity() and "window_stride" not in base.identity()  # ids of older runs hold


@pytest.fixture(scope="module")
def windows_run(tmp_path_factory):
    from nanogpt.run.train import train

    tmp = tmp_path_factory.mktemp("windows")
    cfg = tiny_config(tmp, reading="windows", truncation="random_window", block_size=32, checkpoint_interval=6,
                      keep="all")
    return cfg, train(cfg)


def test_a_windows_run_scores_serves_and_records_its_reading(windows_run):
    from nanogpt.data.imdb import load_imdb
    from nanogpt.serve.predict import Classifier

    cfg, result = windows_run
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["config"]["reading"] == "windows" and meta["config"]["truncation"] == "random_window"
    assert result.row["run_id"] == cfg.run_id()
    clf = Classifier.load(result.checkpoint, precision="auto")  # the precision the run scored in
    assert (clf.reading, clf.window_stride) == ("windows", 16)  # as trained: half its 32-token block
    texts = load_imdb()["validation"]["text"][: cfg.val_limit]
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")["positive_probability"]
    np.testing.assert_allclose(clf.predict(texts).probabilities, saved, atol=1e-6)
    with pytest.raises(ValueError, match="random windows"):
        Classifier.load(result.checkpoint, reading="truncated")


def test_a_random_window_run_resumes_to_the_same_numbers(windows_run):
    from nanogpt.run.train import train

    cfg, result = windows_run
    run_dir = result.run_dir
    assert (run_dir / "state.pt").is_file()  # keep="all": the last resumable state, at step 6
    before = (run_dir / "val_predictions.csv").read_text()
    (run_dir / "meta.json").unlink()
    resumed = train(cfg, resume=True)
    assert result.resumed_from_step == 0 and resumed.resumed_from_step == 6  # from the saved state, not step 0
    assert resumed.val_accuracy == result.val_accuracy and resumed.val_loss == result.val_loss
    assert (run_dir / "val_predictions.csv").read_text() == before


def test_the_service_reads_as_the_checkpoint_records_or_as_told(tiny_run, windows_run):
    from nanogpt.serve.service import load_models

    _, result = windows_run
    models = load_models([f"win={result.checkpoint}", f"old={tiny_run['ce'].checkpoint}"])
    assert (models["win"].meta["reading"], models["win"].meta["window_stride"]) == ("windows", 16)
    assert (models["old"].meta["reading"], models["old"].meta["window_stride"]) == ("truncated", None)
    told = load_models([str(tiny_run["ce"].checkpoint)], reading="windows")
    assert told["ce"].meta["reading"] == "windows" and told["ce"].meta["window_stride"] == 32  # half its 64 tokens
    long_review = "A slow start, then a wonderful film. " * 200
    assert len(told["ce"].classifier.tokenize(long_review).ids(0)) > 64  # read whole, not cut to the block


def test_a_whole_review_model_meets_its_head_tail_twin_in_the_probe(tmp_path):
    """The probe sets a pre-trained model that reads whole reviews beside the same run trained and scored
    truncated (read both ways), found by its config; other recipes and seeds are not twins."""
    from nanogpt.run.rundir import RunDir
    from nanogpt.study.probe import probe_models, truncated_twin

    base = {"profile": "ft", "loss": "ce", "seed": 0, "init": "lm:b.pt", "backbone_lr_scale": 0.25,
            "reading": "truncated", "truncation": "head_tail", "window_stride": None, "out_dir": "x"}
    configs = {"whole": {**base, "reading": "windows", "truncation": "random_window"},
               "twin": {**base, "out_dir": "elsewhere"},
               "other-seed": {**base, "seed": 1}, "other-rate": {**base, "backbone_lr_scale": 1.0}}
    every = pd.DataFrame({"run_id": list(configs), "config": [json.dumps(c) for c in configs.values()],
                          "profile": "ft", "loss": "ce", "seed": [0, 0, 1, 0], "init": "lm:b0"})
    assert truncated_twin(every, every.iloc[0]) == "twin"
    assert truncated_twin(every[every["run_id"] != "twin"], every.iloc[0]) is None
    for rid in ("whole", "twin"):
        RunDir(tmp_path, rid).model.parent.mkdir(parents=True)
        RunDir(tmp_path, rid).model.write_bytes(b"weights")
    models = probe_models(tmp_path, every.iloc[:1], "b0", seed=0, every=every)
    assert {name: reading for name, (_, reading) in models.items()} == {
        "CE pre-trained (whole review) (seed 0)": None, "CE pre-trained, head+tail (seed 0)": "truncated",
        "CE pre-trained, head+tail read in windows (seed 0)": "windows"}


def test_predictions_recomputed_from_a_windows_checkpoint_read_whole_reviews(tmp_path, windows_run):
    """A run folder with its weights but without its predictions (and no archive): they are computed again from the
    checkpoint as the run scored them, whole reviews in windows."""
    import shutil

    from nanogpt.run.predictions import load_val_predictions

    _, result = windows_run
    folder = tmp_path / "runs" / result.run_id
    shutil.copytree(result.run_dir, folder)
    (folder / "val_predictions.csv").unlink()
    again = load_val_predictions(tmp_path, result.run_id)["positive_probability"]
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")["positive_probability"]
    np.testing.assert_allclose(again, saved, atol=1e-6)


def test_a_random_window_run_buckets_its_batches_by_the_windows_lengths(tmp_path, monkeypatch):
    """Batches group reviews of similar length to keep padding small; a random-window run reads at most a block
    of each review, so it sorts by the windowed length (min(length, block)), not the whole review's."""
    from nanogpt.run import train as train_module

    seen = spy(monkeypatch, train_module, "infinite_batches")
    cfg = tiny_config(tmp_path, reading="windows", truncation="random_window", block_size=128, max_steps=2,
                      eval_interval=2, val_limit=32)
    train_module.train(cfg)
    ((lengths, *_), _, _), = seen
    assert lengths.max() == cfg.block_size and lengths.min() < cfg.block_size  # long reviews cut, short ones kept


def test_a_windows_run_validates_at_its_own_stride(tmp_path):
    """The loop's validation and development passes read at the run's window_stride (8 here, not the default half
    block), as the checkpoint's classifier then does."""
    from nanogpt.data.imdb import load_imdb, load_splits
    from nanogpt.run.evaluate import evaluate
    from nanogpt.run.selection import carve_dev
    from nanogpt.run.train import train
    from nanogpt.serve.predict import Classifier

    cfg = tiny_config(tmp_path, reading="windows", truncation="random_window", block_size=32, window_stride=8,
                      max_steps=4, eval_interval=4, val_limit=32, dev_fraction=0.1, keep_best=True,
                      precision="fp32", log_interval=2)  # a training-loss point between passes, without dev numbers
    result = train(cfg)  # one pass, at the last step: its weights are the best, and scored again at the end
    clf = Classifier.load(result.checkpoint, precision="fp32")
    train_split, val = load_splits(cfg)
    _, dev = carve_dev(train_split, cfg.dev_fraction, cfg.split_seed)
    point = result.history.dropna(subset=["dev_loss"]).iloc[-1]
    for split, name in ((dev, "dev"), (val, "val")):  # losses: a barely trained model's accuracy may not tell
        probs, loss = evaluate(clf.model, clf.criterion, split, torch.device("cpu"), "fp32", 64, 8, "windows", 8)
        assert point[f"{name}_loss"] == pytest.approx(loss, rel=1e-6, abs=0), name
        assert point[f"{name}_accuracy"] == float(np.mean((probs > 0.5) == split.labels)), name
    assert clf.window_stride == 8
    saved = pd.read_csv(result.run_dir / "val_predictions.csv")["positive_probability"]
    texts = load_imdb()["validation"]["text"][:32]
    np.testing.assert_allclose(clf.predict(texts).probabilities, saved, atol=1e-6)
    default = Classifier.load(result.checkpoint, precision="fp32", window_stride=16)  # another stride scores otherwise
    assert not np.allclose(default.predict(texts).probabilities, saved, atol=1e-6)
