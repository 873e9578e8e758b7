import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import spy, tiny_config

from nanogpt.core.runtime import resolve_device, resolve_precision
from nanogpt.data.batching import bucketed_batches
from nanogpt.data.imdb import load_tokenized
from nanogpt.run.config import TrainConfig
from nanogpt.run.train import NonFiniteLossError, learning_rate_at, train

RUNS_COLUMNS = ["run_id", "loss", "seed", "profile", "source", "split_seed", "n_train", "n_val", "val_accuracy",
                "val_loss", "roc_auc", "ece", "steps", "train_seconds", "tokens_per_second", "device",
                "torch_version", "config"]


def test_outputs_of_a_run(tiny_run):
    result = tiny_run["ce"]
    run_dir = result.run_dir
    assert {p.name for p in run_dir.iterdir()} >= {"model.pt", "meta.json", "history.csv"}
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)  # plain tensors and containers only
    assert ckpt["loss"] == "ce" and ckpt["tokenizer"] == "gpt2" and ckpt["data_source"] == "bundled"
    assert ckpt["model_config"]["n_outputs"] == 2 and ckpt["split_seed"] == 1337
    assert not any(k.startswith("_orig_mod") for k in ckpt["model_state"])
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns[:6]) == ["step", "train_loss", "val_loss", "val_accuracy", "lr", "tokens_per_second"]
    assert history["step"].tolist() == [6, 12]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["config"]["loss"] == "ce" and meta["environment"]["torch_version"] == torch.__version__
    assert meta["schedule"] == {"max_steps": 12, "eval_interval": 6, "warmup_steps": 3, "epochs": None,
                                "steps_run": 12}
    assert result.run_id == run_dir.name == TrainConfig(**meta["config"]).run_id()
    runs = pd.read_csv(run_dir.parent.parent / "runs.csv")
    assert set(RUNS_COLUMNS) <= set(runs.columns)  # every field a row promises (more may follow)
    assert sorted(runs["loss"]) == ["bce", "ce"]
    row = runs[runs["loss"] == "ce"].iloc[0]
    assert row["val_accuracy"] == pytest.approx(result.val_accuracy)
    assert row["n_val"] == 256 and row["n_train"] == 512 and row["steps"] == 12
    assert json.loads(row["config"])["n_embd"] == 32
    # the reported accuracy is the one at the end of the schedule, not the best along the way
    assert history["val_accuracy"].iloc[-1] == pytest.approx(result.val_accuracy)


def test_each_group_learns_at_its_scale_of_the_schedule_and_the_last_dev_score_is_kept(tmp_path):
    """The loop sets every optimizer group's rate to the schedule x its lr_scale (a head at twice the rate, the
    backbone at a quarter), and the row's last_dev_accuracy is the development score of the last pass."""
    cfg = tiny_config(tmp_path, head_lr_scale=2.0, backbone_lr_scale=0.25, dev_fraction=0.1, keep="all")
    result = train(cfg)
    state = torch.load(result.run_dir / "state.pt", weights_only=True)  # kept by keep="all": saved at step 6
    assert state["step"] == 6
    scales = sorted(g["lr_scale"] for g in state["optimizer_state"]["param_groups"])
    assert scales == [0.25, 0.25, 2.0, 2.0]
    for group in state["optimizer_state"]["param_groups"]:
        assert group["lr"] == pytest.approx(learning_rate_at(5, cfg) * group["lr_scale"])
    dev = result.history["dev_accuracy"].dropna()
    assert len(dev) == 2 and result.row["last_dev_accuracy"] == dev.iloc[-1]


def test_bce_run_has_one_output(tiny_run):
    ckpt = torch.load(tiny_run["bce"].checkpoint, weights_only=True)
    assert ckpt["model_config"]["n_outputs"] == 1 and ckpt["model_state"]["head.weight"].shape == (1, 32)


def test_same_seed_same_numbers(tmp_path, tiny_run):
    again = train(tiny_config(tmp_path, loss="ce"))
    first = tiny_run["ce"]
    assert again.run_id == first.run_id
    assert again.val_accuracy == first.val_accuracy
    assert again.val_loss == first.val_loss
    pd.testing.assert_frame_equal(again.history[["step", "train_loss", "val_loss", "val_accuracy"]],
                                  first.history[["step", "train_loss", "val_loss", "val_accuracy"]])
    other = train(tiny_config(tmp_path, loss="ce", seed=1))
    assert other.run_id != first.run_id and other.history["train_loss"].iloc[0] != first.history["train_loss"].iloc[0]


def test_rerun_replaces_its_row(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, eval_interval=2)
    train(cfg)
    train(cfg)
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert len(runs) == 1


def test_bucketed_batches_cover_epoch_with_little_padding():
    lengths = load_tokenized(block_size=384)["train"].lengths
    batches = bucketed_batches(lengths, 32, seed=0, epoch=0)
    flat = np.concatenate(batches)
    assert len(flat) == len(lengths) // 32 * 32 and len(np.unique(flat)) == len(flat)
    assert all(len(b) == 32 for b in batches)
    padded = sum(lengths[b].max() * len(b) for b in batches)
    assert lengths[flat].sum() / padded > 0.9  # under 10% of the batch is padding
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(lengths))[: len(flat)], len(batches))
    random_padded = sum(lengths[b].max() * len(b) for b in random_batches)
    assert padded < 0.7 * random_padded  # random batches almost always hold a full-length review
    # deterministic in (seed, epoch), and epochs differ
    assert all(np.array_equal(a, b) for a, b in zip(batches, bucketed_batches(lengths, 32, 0, 0)))
    assert not np.array_equal(flat, np.concatenate(bucketed_batches(lengths, 32, 0, 1)))


def test_learning_rate_schedule():
    cfg = TrainConfig(learning_rate=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [learning_rate_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] > 0.1
    assert learning_rate_at(110, cfg) == pytest.approx(0.1)


def test_non_finite_loss_stops_with_step_and_lr(tmp_path, monkeypatch):
    from nanogpt.core import losses
    monkeypatch.setattr(losses.CrossEntropyCriterion, "loss", lambda self, logits, y: (logits.sum() * float("nan")))
    cfg = tiny_config(tmp_path)
    with pytest.raises(NonFiniteLossError) as failed:
        train(cfg)
    # no state saved yet, so none is promised: the message ends with the hint, word for word
    assert str(failed.value) == (f"run {cfg.run_id()}: loss became nan at step 0 (learning rate "
                                 f"{learning_rate_at(0, cfg):.3g}). Hint: lower --set learning_rate, keep grad_clip > 0, "
                                 "or use --precision fp32.")
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")  # recorded as failed, never as an accuracy
    assert runs["status"].tolist() == ["failed"] and runs["val_accuracy"].isna().all()


def test_device_and_precision():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("change, match", [(dict(loss="mse"), "Unknown loss"), (dict(max_steps=0), "max_steps"),
                                           (dict(precision="fp8"), "precision"), (dict(train_limit=1), "train_limit"),
                                           (dict(n_embd=30), "divisible")])
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**change).validate()


def test_run_dir_knows_every_path(tmp_path, tiny_run):
    from nanogpt.run.results import runs_csv
    from nanogpt.run.rundir import RunDir, finished_run_ids

    result = tiny_run["bce"]
    out_dir = result.run_dir.parent.parent
    run = RunDir(out_dir, result.run_id)
    assert run.path == result.run_dir and run.model == result.checkpoint
    assert run.meta.is_file() and run.history.is_file() and run.val_predictions.is_file()
    assert not run.state.exists()  # finished: no resumable state left
    assert runs_csv(out_dir).is_file() and result.run_id in finished_run_ids(out_dir)
    preds = pd.read_csv(run.val_predictions)
    assert len(preds) == 256 and np.mean((preds["positive_probability"] > 0.5) == preds["label"]) == pytest.approx(
        result.val_accuracy)


def test_model_config_comes_from_the_run_config():
    cfg = TrainConfig(n_layer=3, n_head=2, n_embd=48, block_size=96, pooling="last", gelu="none", attention="sdpa")
    mc = cfg.model_config(n_outputs=1)
    assert (mc.n_layer, mc.n_head, mc.n_embd, mc.block_size, mc.pooling, mc.gelu, mc.n_outputs) == (
        3, 2, 48, 96, "last", "none", 1)
    with pytest.raises(ValueError, match="attention must be one of"):
        TrainConfig(attention="flash").validate()


def test_training_loss_is_logged_densely_between_validation_passes(tmp_path):
    result = train(tiny_config(tmp_path, max_steps=12, eval_interval=6, log_interval=2))
    h = result.history
    assert h["step"].tolist() == [2, 4, 6, 8, 10, 12]
    assert h["train_loss"].notna().all()  # each the mean over the steps since the previous point
    assert h.loc[h["val_accuracy"].notna(), "step"].tolist() == [6, 12]  # validation only at its interval
    assert h["val_accuracy"].dropna().iloc[-1] == pytest.approx(result.val_accuracy)


# ------------------------------------------------------------ killers of mutants of run/train.py that survived

@pytest.mark.parametrize("warmup, max_steps", [(4, 5), (0, 1), (0, 7), (10, 110)])
def test_the_schedule_reaches_its_floor_at_max_steps_and_its_peak_after_warmup(warmup, max_steps):
    cfg = TrainConfig(learning_rate=1.0, min_lr_ratio=0.1, warmup_steps=warmup, max_steps=max_steps)
    assert learning_rate_at(warmup, cfg) == pytest.approx(1.0)
    assert learning_rate_at(max_steps, cfg) == pytest.approx(0.1)
    assert learning_rate_at(2 * max_steps + 1, cfg) == pytest.approx(0.1)  # and it stays there


def test_a_gpt2_init_builds_from_gpt2_with_the_runs_attention(tmp_path, monkeypatch):
    from nanogpt.core.model import GPTClassifier
    from nanogpt.run.train import build_model

    calls = []
    monkeypatch.setattr(GPTClassifier, "from_pretrained_gpt2",
                        classmethod(lambda cls, mc, attention: calls.append((mc.n_outputs, attention)) or "gpt2"))
    cfg = tiny_config(tmp_path, init="gpt2", attention="sdpa")
    assert build_model(cfg, 2) == "gpt2" and calls == [(2, "sdpa")]
    scratch = build_model(tiny_config(tmp_path, attention="sdpa"), 2)
    assert {block.attn.attention for block in scratch.transformer.h} == {"sdpa"}


def test_a_run_sets_the_thread_count_it_asks_for(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train(tiny_config(tmp_path, max_steps=2, eval_interval=2, num_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_training_split_smaller_than_a_batch_says_how_many_rows_would_do(tmp_path):
    from nanogpt.data.imdb import DataValidationError
    from nanogpt.run.train import check_batch_fits

    cfg = tiny_config(tmp_path, train_limit=None, val_limit=None, batch_size=32, val_fraction=0.2)
    with pytest.raises(DataValidationError, match=rf"^{cfg.source}: the training split has 20 reviews, fewer than one "
                                                  r"batch of 32\. Fix: give at least 32 training reviews \(about 41 "
                                                  r"rows before the split\), or --set batch_size=20 or smaller\.$"):
        check_batch_fits(20, cfg)  # 32 / (1 - 0.2) + 1 rows leave 32 after a fifth is held out
    check_batch_fits(32, cfg)  # exactly one batch fits: no complaint
    with pytest.raises(DataValidationError, match=r"training split has 0 reviews.*--set batch_size=1 or smaller\.$"):
        check_batch_fits(0, cfg)  # no review at all: the hint still names a batch size that exists


def test_a_quiet_run_prints_nothing_and_another_says_what_it_tokenized_and_trains(tmp_path, capsys):
    import re

    from nanogpt.data.imdb import load_imdb
    from nanogpt.run.train import build_model

    source = tmp_path / "small.csv"
    load_imdb()["train"].select(range(80)).to_pandas().to_csv(source, index=False)
    small = dict(source=str(source), train_limit=None, val_limit=None, max_steps=2, eval_interval=2,
                 precision="fp32")
    train(tiny_config(tmp_path / "a", quiet=True, cache_dir=str(tmp_path / "q"), **small))
    assert capsys.readouterr() == ("", "")  # quiet: not a line, not a progress bar
    cfg = tiny_config(tmp_path / "b", quiet=False, cache_dir=str(tmp_path / "v"), **small)
    result = train(cfg)
    out, err = capsys.readouterr()
    # off a terminal the progress is a line (every 10 s, and one at the end): steps done of the schedule
    assert re.fullmatch(r"ce seed 0: 2/2 steps, \d+ s \(loss=\d\.\d{3}, val_acc=\d\.\d{3}, tok_s=[\d,]+\)\n", err), err
    model = build_model(cfg.validate(), 2)
    assert "tokenized 80 reviews in " in out
    assert (f"run {result.run_id}: {model.num_parameters() / 1e6:.2f}M parameters ({model.num_parameters(True) / 1e6:.2f}"
            f"M non-embedding), {result.row['n_train']} train / {result.row['n_val']} val reviews, cpu fp32\n") in out
    own = train(cfg.replace(out_dir=str(tmp_path / "c"), dev_fraction=0.2, epochs=1.0))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"run {own.run_id}: "))
    assert re.search(r"M non-embedding\), \d+ train / \d+ dev / \d+ val reviews, \d+ steps \(1 passes\), cpu fp32$",
                     line), line


def test_the_logged_training_loss_is_the_mean_over_its_interval_and_the_clock_starts_at_zero(tmp_path, monkeypatch):
    import time

    from nanogpt.core import losses

    real = losses.CrossEntropyCriterion.loss
    monkeypatch.setattr(losses.CrossEntropyCriterion, "loss",
                        lambda self, logits, labels: real(self, logits, labels) * 0 + 0.5)
    monkeypatch.setattr(time, "perf_counter", lambda: 100.0)  # a clock that never moves: no time is spent
    result = train(tiny_config(tmp_path, max_steps=6, eval_interval=3))
    assert result.history["train_loss"].tolist() == [0.5, 0.5]
    assert result.row["train_seconds"] == 0.0


def test_padding_never_changes_what_a_run_learns(tmp_path):
    """The loop hands the model each row's real length, so the pad tokens of a batch are never read: a run whose
    batches are padded to a multiple of 128 learns exactly what one padded to its longest review learns (no
    dropout, whose masks depend on the padded shape). Reviews up to 256 tokens, so many batches carry padding."""
    runs = {pad: train(tiny_config(tmp_path / str(pad), block_size=256, dropout=0.0, pad_multiple=pad, max_steps=6,
                                   eval_interval=6, log_interval=1, train_limit=256, val_limit=64, precision="fp32"))
            for pad in (1, 128)}
    tight, padded = (r.history["train_loss"].to_numpy() for r in runs.values())
    assert len(tight) == 6 and np.allclose(tight, padded, rtol=0, atol=2e-5), (tight, padded)
    probs = [pd.read_csv(r.run_dir / "val_predictions.csv")["positive_probability"] for r in runs.values()]
    assert np.allclose(*probs, rtol=0, atol=2e-5)


def test_the_run_line_says_when_the_model_is_compiled(tmp_path, monkeypatch, capsys):
    """The run line names what runs: a compiled model says so (compilation stubbed: the words are the subject)."""
    import re

    from nanogpt.run import train as train_module

    compiled = []
    monkeypatch.setattr(train_module, "use_compile", lambda setting, device: True)
    monkeypatch.setattr(train_module.torch, "compile", lambda model, dynamic: compiled.append(dynamic) or model)
    result = train(tiny_config(tmp_path, quiet=False, max_steps=2, eval_interval=2, val_limit=32, precision="fp32"))
    assert compiled == [True]  # dynamic shapes: batches vary in length
    out = capsys.readouterr().out
    assert re.search(rf"run {result.run_id}: .* val reviews, cpu fp32 compiled\n", out)
    # and the run's last line: its numbers and where they are
    assert re.search(rf"run {result.run_id}: val accuracy {result.val_accuracy:.4f}, val loss {result.val_loss:.4f}, "
                     rf"\d+s training, [\d,]+ tokens/s -> {re.escape(str(result.run_dir))}\n", out)


def test_the_curve_counts_seconds_and_tokens_from_the_start_of_the_run(tmp_path, monkeypatch):
    """Each point of the curve holds the training seconds and tokens/s so far: with a clock that moves 0.375 s per
    reading (two readings a step), step k has taken k x 0.375 s and every real token of its batches counts."""
    import itertools
    import time

    from nanogpt.run import train as train_module

    ticks = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 0.375)
    batches = spy(monkeypatch, train_module, "collate")
    cfg = tiny_config(tmp_path, max_steps=6, eval_interval=3, log_interval=1, precision="fp32", loss="bce", seed=3)
    result = train(cfg)
    tokens = [int(lengths.sum()) for _, _, (_, lengths, _) in batches]  # each batch's real tokens
    curve = result.history
    assert curve["step"].tolist() == [1, 2, 3, 4, 5, 6] and len(tokens) == 6
    np.testing.assert_allclose(curve["train_seconds"], curve["step"] * 0.375)
    np.testing.assert_allclose(curve["tokens_per_second"] * curve["train_seconds"], np.cumsum(tokens))
    assert result.row["train_seconds"] == 2.25 and result.row["tokens_per_second"] == round(sum(tokens) / 2.25, 1)
    assert round(sum(tokens) / 2.25, 1) != round(sum(tokens) / 2.25)  # so the row's one decimal is seen
    passes = curve.dropna(subset=["val_accuracy"])  # validation at steps 3 and 6: both numbers on both points
    assert passes["step"].tolist() == [3, 6] and passes["val_loss"].notna().all()
    assert passes["val_loss"].iloc[-1] == result.val_loss and curve["val_loss"].isna().sum() == 4
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["step"] == 6  # no development slice: the last step kept
    meta = json.loads((result.run_dir / "meta.json").read_text())  # the checkpoint records the run it came from
    assert ckpt["train_config"] == meta["config"] and ckpt["val_accuracy"] == result.val_accuracy
    assert (ckpt["split_seed"], ckpt["data_source"], ckpt["reading"]) == (1337, "bundled", "truncated")
    row = pd.read_csv(result.run_dir.parent.parent / "runs.csv").iloc[0]  # and the index row says where and what
    assert (row["device"], row["precision"], row["status"]) == ("cpu", "fp32", "ok")
    assert row["val_loss"] == pytest.approx(result.val_loss, rel=1e-9) and row["val_accuracy"] == result.val_accuracy
    for metric in ("roc_auc", "ece", "f1"):
        assert row[metric] == pytest.approx(result.metrics[metric], rel=1e-9), metric
    assert meta["metrics"] == result.metrics and meta["val_loss"] == result.val_loss  # meta.json: the numbers unrounded
    assert meta["tokens_per_second"] == sum(tokens) / 2.25 and meta["train_seconds"] == 2.25
    assert meta["model_config"] == ckpt["model_config"] and meta["environment"]["precision"] == "fp32"
    # the RunResult a caller gets: the run's own numbers, unrounded
    assert (result.loss, result.seed, result.steps, result.device, result.precision) == ("bce", 3, 6, "cpu", "fp32")
    assert result.tokens_per_second == meta["tokens_per_second"] and result.train_seconds == 2.25


@pytest.mark.parametrize("grad_clip, calls", [(1.0, [1.0, 1.0]), (0.0, [])])
def test_gradients_are_clipped_at_grad_clip_and_never_at_zero(tmp_path, monkeypatch, grad_clip, calls):
    clips = spy(monkeypatch, torch.nn.utils, "clip_grad_norm_")
    train(tiny_config(tmp_path, max_steps=2, eval_interval=2, val_limit=32, grad_clip=grad_clip))
    assert [args[1] for args, _, _ in clips] == calls  # one global clip a step at 1.0; 0 disables it
